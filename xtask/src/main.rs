//! `xtask`: repository automation for flagd (`cargo xtask <command>`).

fn main() -> anyhow::Result<()> {
    Ok(())
}
