//! `flags-typed-example`: typed flags declared in protobuf, as an application declares them.
//!
//! `proto/shop/flags.proto` declares two features, `Checkout` and `Search`, with a flag of every
//! type, global ones and ones that vary by user or by organisation. `build.rs` runs
//! `flags-codegen` over it, and [`flags`] includes what it writes: [`flags::CheckoutFlags`] and
//! [`flags::SearchFlags`], one method per flag, evaluated through any
//! [`flags_sdk::typed::FlagSource`], such as a [`flags_sdk::Client`].
//!
//! ```
//! use flags_sdk::{Client, DataSource};
//! use flags_typed_example::flags::CheckoutFlags;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("sdk-key")
//!     .data_source(DataSource::Offline)
//!     .build()?;
//! let checkout = CheckoutFlags::new(client);
//! // No data: every flag answers with the default its declaration compiled in.
//! assert_eq!(checkout.max_items(), 50);
//! assert_eq!(checkout.theme("user-1"), "light");
//! # Ok(())
//! # }
//! ```
//!
//! It is an example and a test fixture (flagd's `typed_flags` test runs it against a real
//! flagd), never published.

/// The typed client generated from `proto/shop/flags.proto`.
pub mod flags {
    include!(concat!(env!("OUT_DIR"), "/flags_typed.rs"));
}
