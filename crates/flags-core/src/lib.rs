//! `flags-core`: the shared vocabulary of flagd.
//!
//! Values, contexts, the LaunchDarkly server-side flag and segment model, evaluation results, and
//! the small traits that join the engine, the stores and the server. It does no I/O and knows
//! nothing of tokio, axum, sqlx or redis.
