-- Slugs never look like ids (issue 10): a slug that parses as a UUID (32 hex digits, or the
-- hyphenated 8-4-4-4-12 form, any case) could stand in for another agent's id. Agents created
-- before the rule get `slug-<old slug>` (what a name equal to an id now derives), or, when that
-- is taken, `renamed-<16 random hex>`. Lookups by an id-shaped key go by id only anyway.
UPDATE agents
SET slug = CASE
        WHEN EXISTS (SELECT 1 FROM agents o WHERE o.slug = 'slug-' || lower(agents.slug))
            THEN 'renamed-' || lower(hex(randomblob(8)))
        ELSE 'slug-' || lower(agents.slug)
    END
WHERE (length(slug) = 32 AND slug NOT GLOB '*[^0-9a-fA-F]*')
   OR (length(slug) = 36
       AND substr(slug, 9, 1) = '-' AND substr(slug, 14, 1) = '-'
       AND substr(slug, 19, 1) = '-' AND substr(slug, 24, 1) = '-'
       AND length(replace(slug, '-', '')) = 32
       AND replace(slug, '-', '') NOT GLOB '*[^0-9a-fA-F]*');
