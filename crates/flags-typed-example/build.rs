//! Generates the typed client of `proto/shop/flags.proto` into `OUT_DIR`, as a user's build
//! script would.

fn main() {
    if let Err(err) = flags_codegen::Builder::new()
        .include("proto")
        .compile(&["proto/shop/flags.proto"])
    {
        // A build script reports failure by failing; the message says which declaration to fix.
        panic!("{err}");
    }
}
