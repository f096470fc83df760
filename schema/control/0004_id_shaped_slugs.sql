-- Slugs never look like ids (issue 10): an org or workspace slug that parses as a UUID (32 hex
-- digits, or the hyphenated 8-4-4-4-12 form, any case) is renamed `slug-<old slug>` (what a
-- name equal to an id now derives), or `renamed-<16 random hex>` when that is taken.
UPDATE orgs
SET slug = CASE
        WHEN EXISTS (SELECT 1 FROM orgs o WHERE o.slug = 'slug-' || lower(orgs.slug))
            THEN 'renamed-' || lower(hex(randomblob(8)))
        ELSE 'slug-' || lower(orgs.slug)
    END
WHERE (length(slug) = 32 AND slug NOT GLOB '*[^0-9a-fA-F]*')
   OR (length(slug) = 36
       AND substr(slug, 9, 1) = '-' AND substr(slug, 14, 1) = '-'
       AND substr(slug, 19, 1) = '-' AND substr(slug, 24, 1) = '-'
       AND length(replace(slug, '-', '')) = 32
       AND replace(slug, '-', '') NOT GLOB '*[^0-9a-fA-F]*');

UPDATE workspaces
SET slug = CASE
        WHEN EXISTS (SELECT 1 FROM workspaces o
                     WHERE o.org_id = workspaces.org_id AND o.slug = 'slug-' || lower(workspaces.slug))
            THEN 'renamed-' || lower(hex(randomblob(8)))
        ELSE 'slug-' || lower(workspaces.slug)
    END
WHERE (length(slug) = 32 AND slug NOT GLOB '*[^0-9a-fA-F]*')
   OR (length(slug) = 36
       AND substr(slug, 9, 1) = '-' AND substr(slug, 14, 1) = '-'
       AND substr(slug, 19, 1) = '-' AND substr(slug, 24, 1) = '-'
       AND length(replace(slug, '-', '')) = 32
       AND replace(slug, '-', '') NOT GLOB '*[^0-9a-fA-F]*');
