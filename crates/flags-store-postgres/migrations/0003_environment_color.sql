-- The colour people see an environment in, so a page about production does not look like one
-- about staging: `#rrggbb` in lower case, as flagd stores it. NULL when none was chosen.
ALTER TABLE environments ADD COLUMN color text CHECK (color ~ '^#[0-9a-f]{6}$');
