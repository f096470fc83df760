"""Invariants of scripts/placement_sim.py, on small populations (runs in a few seconds).

    python3 -m unittest scripts/test_placement_sim.py
"""
import io
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import placement_sim as sim  # noqa: E402


def args_for(**overrides):
    args = sim.parse_args(["--workspaces", "4000", "--nodes", "8", "--vnodes", "50"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


class PlacementInvariants(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pop = sim.make_population(4000, seed=5)
        cls.args = args_for()
        cls.nodes = list(range(8))

    def placements(self, nodes, previous=None):
        return {s: sim.place(s, self.pop, nodes, self.args,
                             previous=None if previous is None else previous[s])
                for s in sim.SCHEMES}

    def test_population_is_deterministic_and_well_formed(self):
        again = sim.make_population(4000, seed=5)
        self.assertEqual(self.pop.ids, again.ids)
        self.assertEqual(list(self.pop.size), list(again.size))
        self.assertEqual(len(set(self.pop.ids)), 4000)
        self.assertAlmostEqual(math.fsum(self.pop.rate), 1.0, places=9)
        self.assertEqual(sum(self.pop.hot), 40)
        # the hot workspaces are exactly the busiest ones
        hottest = sorted(range(4000), key=lambda i: -self.pop.rate[i])[:40]
        self.assertEqual(sorted(hottest), [i for i in range(4000) if self.pop.hot[i]])
        self.assertNotEqual(self.pop.ids, sim.make_population(4000, seed=6).ids)

    def test_every_workspace_is_placed_once_on_a_live_node(self):
        for scheme, placement in self.placements(self.nodes).items():
            with self.subTest(scheme=scheme):
                self.assertEqual(len(placement), len(self.pop))
                self.assertTrue(set(placement) <= set(self.nodes))
                counts = sim.per_node(placement, self.nodes)
                self.assertEqual(sum(counts.values()), len(self.pop))
                # a deterministic function of (workspace, node set)
                self.assertEqual(list(placement),
                                 list(sim.place(scheme, self.pop, self.nodes, self.args)))

    def test_consistent_schemes_move_only_the_failed_nodes_share(self):
        base = self.placements(self.nodes)
        for failed in (0, 3, 7):
            survivors = [n for n in self.nodes if n != failed]
            after = self.placements(survivors, previous=base)
            for scheme in ("ring", "hrw", "bounded+"):
                with self.subTest(scheme=scheme, failed=failed):
                    moved = sim.moved(base[scheme], after[scheme])
                    on_failed = [i for i, n in enumerate(base[scheme]) if n == failed]
                    self.assertEqual(moved, on_failed)
                    self.assertNotIn(failed, set(after[scheme]))
            with self.subTest(scheme="modulo", failed=failed):
                # mod N -> mod N-1 moves most workspaces, far beyond the failed node's share
                moved = sim.moved(base["modulo"], after["modulo"])
                self.assertGreater(len(moved), len(self.pop) // 2)

    def test_an_added_node_takes_workspaces_only_from_others_to_itself(self):
        base = self.placements(self.nodes)
        grown = self.nodes + [8]
        after = self.placements(grown, previous=base)
        ring = sim.Ring(grown, 50)
        for scheme in ("ring", "hrw", "bounded+"):
            with self.subTest(scheme=scheme):
                moved = sim.moved(base[scheme], after[scheme])
                self.assertTrue(moved)
                if scheme == "bounded+":
                    # only workspaces whose first choice is the new node move; past its bound
                    # some of them walk on to the next node with room
                    first = [ring.owners[ring.first(self.pop.keys[i])] for i in moved]
                    self.assertEqual(set(first), {8})
                    self.assertGreater(sum(1 for i in moved if after[scheme][i] == 8),
                                       len(moved) // 2)
                else:
                    self.assertTrue(all(after[scheme][i] == 8 for i in moved))
                # about 1/(N+1) of them
                self.assertLess(abs(len(moved) - len(self.pop) / 9), len(self.pop) / 9 * 0.5)

    def test_hrw_in_one_pass_equals_hrw_from_scratch(self):
        best, second, grown = sim.hrw_scenarios(self.pop, self.nodes, 8)
        self.assertEqual(list(best), list(sim.place_hrw(self.pop, self.nodes)))
        self.assertEqual(list(grown), list(sim.place_hrw(self.pop, self.nodes + [8])))
        for failed in (1, 6):
            survivors = [n for n in self.nodes if n != failed]
            derived = [s if b == failed else b for b, s in zip(best, second)]
            self.assertEqual(derived, list(sim.place_hrw(self.pop, survivors)))

    def test_maglev_shares_its_table_evenly_and_mostly_stays_put(self):
        table = sim.maglev_table(self.nodes, size=1009)
        counts = [table.count(n) for n in self.nodes]
        self.assertEqual(sum(counts), 1009)
        self.assertLessEqual(max(counts) - min(counts), 1)
        smaller = sim.maglev_table([n for n in self.nodes if n != 3], size=1009)
        kept = sum(1 for a, b in zip(table, smaller) if a == b and a != 3)
        # every slot of a live node mostly keeps its node (minimal disruption, not zero)
        self.assertGreater(kept, 0.9 * (1009 - counts[3]))
        self.assertNotIn(3, smaller)

    def test_ring_variants_parse(self):
        self.assertTrue(sim.scheme_ok("ring@10"))
        self.assertFalse(sim.scheme_ok("ring@x"))
        self.assertFalse(sim.scheme_ok("ring@0"))
        a = sim.place("ring@7", self.pop, self.nodes, self.args)
        self.assertEqual(list(a), list(sim.place_ring(self.pop, self.nodes, 7)))

    def test_bounded_load_respects_its_bound(self):
        for factor in (1.05, 1.25):
            placement = sim.place_bounded(self.pop, self.nodes, vnodes=50, factor=factor)
            counts = sim.per_node(placement, self.nodes)
            self.assertLessEqual(max(counts.values()), factor * len(self.pop) / len(self.nodes))
        # and plain consistent hashing with few virtual nodes does not
        ring = sim.place_ring(self.pop, self.nodes, vnodes=1)
        counts = sim.per_node(ring, self.nodes)
        self.assertGreater(max(counts.values()), 1.05 * len(self.pop) / len(self.nodes))

    def test_hrw_is_a_rendezvous_hash(self):
        # removing a node that a workspace is not on never changes its node
        base = sim.place_hrw(self.pop, self.nodes)
        without = sim.place_hrw(self.pop, [n for n in self.nodes if n != 5])
        for a, b in zip(base, without):
            if a != 5:
                self.assertEqual(a, b)

    def test_hydration_counts_what_moved_and_orders_hot_first(self):
        base = sim.place_ring(self.pop, self.nodes, 50)
        failed = 2
        after = sim.place_ring(self.pop, [n for n in self.nodes if n != failed], 50)
        storm = sim.hydration(self.pop, base, after, failed, bandwidth=1e6, latency=0.01,
                              concurrency=4)
        hot_on_failed = [i for i, n in enumerate(base) if n == failed and self.pop.hot[i]]
        self.assertEqual(storm["hot_moved"], len(hot_on_failed))
        self.assertEqual(storm["hot_bytes"], sum(self.pop.size[i] for i in hot_on_failed))
        hf, ar = storm["hot_first"], storm["arbitrary"]
        self.assertEqual(set(hf), {0.5, 0.9, 0.99})
        for mark in hf:
            self.assertLessEqual(hf[mark], ar[mark] + 1e-9)
            self.assertLessEqual(hf[mark], storm["all_back_s"] + 1e-9)
        whole = sim.hydration(self.pop, base, after, failed, 1e6, 0.01, 4, everything=True)
        on_failed = [i for i, n in enumerate(base) if n == failed]
        self.assertEqual(whole["hot_moved"], len(on_failed))
        self.assertGreaterEqual(whole["all_back_s"], storm["all_back_s"])

    def test_the_report_runs_end_to_end(self):
        out = io.StringIO()
        sim.run(sim.parse_args(["--workspaces", "2000", "--nodes", "4,6", "--vnodes", "20"]), out)
        text = out.getvalue()
        for scheme in sim.DEFAULT_SCHEMES:
            self.assertIn(f"| {scheme} |", text)
        self.assertIn("## N = 6 nodes", text)


if __name__ == "__main__":
    unittest.main()
