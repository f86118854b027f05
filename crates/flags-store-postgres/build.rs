//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files of
//! `migrations/` but, on stable Rust, only tracks the ones that existed at the last build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
