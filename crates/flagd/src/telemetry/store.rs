//! Store calls as spans: decorators around any [`AdminStore`] and any [`BigSegmentMembers`],
//! so every call flagd makes to a backend is traced in one place, whoever makes it (the admin
//! API, the SDK-key cache, big-segment lookups, root mode's sync loop).
//!
//! Each call is a debug-level span with target [`STORE_TARGET`], named `store.{operation}`
//! for collectors, with the database system when known, the operation, and the environment
//! when the call names one; a failed call records its error on the span. Inside a request the
//! span is the request span's child. Without an exporter the log filter disables these spans,
//! so a call costs what it did, plus one boxed future (the traits are `async_trait`s).

use std::collections::HashMap;
use std::sync::Arc;

use flags_core::BigSegmentMembership;
use flags_store::{
    Actor, AdminStore, ApiKey, AuditEntry, AuditQuery, BatchError, BigSegmentMembers, Change,
    ChangeFeed, ChangeSubscription, CreatedApiKey, EnvSnapshot, Environment, EnvironmentUpdate,
    ImportItem, ImportOutcome, KeyStore, LastChange, ListFilter, MemberChange, MemberUpload,
    NewApiKey, NewEnvironment, Override, OverrideKey, SegmentTargetsUpdate, StoreError, StoredFlag,
    StoredSegment, UploadError,
};
use serde_json::Value;
use tracing::{Instrument, Span};

use super::STORE_TARGET;

/// Runs one store call inside its span, and records its error, if any, on it.
macro_rules! traced {
    ($system:expr, $operation:literal, $env:expr, $call:expr) => {{
        let span = tracing::debug_span!(
            target: STORE_TARGET,
            "store",
            otel.name = concat!("store.", $operation),
            otel.kind = "client",
            db.system.name = $system,
            db.operation.name = $operation,
            flagd.environment = $env,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let result = $call.instrument(span.clone()).await;
        if let Err(error) = &result {
            failed(&span, error);
        }
        result
    }};
}

/// No environment: the call is about the whole store.
const WHOLE: Option<&str> = None;

fn failed(span: &Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(error));
}

/// Any [`AdminStore`], each call a span. Its big-segment members, when it keeps them, are
/// wrapped the same way.
pub(crate) struct TracedStore {
    inner: Arc<dyn AdminStore>,
    /// `db.system.name`, when known (`postgresql`).
    system: Option<&'static str>,
}

impl TracedStore {
    /// `inner`, traced; `system` is the database's name in OpenTelemetry's vocabulary.
    pub(crate) fn wrap(
        inner: Arc<dyn AdminStore>,
        system: Option<&'static str>,
    ) -> Arc<dyn AdminStore> {
        Arc::new(TracedStore { inner, system })
    }
}

#[async_trait::async_trait]
impl ChangeFeed for TracedStore {
    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        traced!(
            self.system,
            "list_environments",
            WHOLE,
            self.inner.list_environments()
        )
    }

    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError> {
        traced!(
            self.system,
            "get_environment",
            Some(key),
            self.inner.get_environment(key)
        )
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError> {
        traced!(
            self.system,
            "get_flag",
            Some(env),
            self.inner.get_flag(env, key)
        )
    }

    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError> {
        traced!(
            self.system,
            "get_segment",
            Some(env),
            self.inner.get_segment(env, key)
        )
    }

    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        traced!(self.system, "snapshot", Some(env), self.inner.snapshot(env))
    }

    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError> {
        traced!(
            self.system,
            "changes_since",
            Some(env),
            self.inner.changes_since(env, cursor)
        )
    }

    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        // The span covers subscribing; the changes then arrive on the subscription, untraced
        // (waiting for one is not a call).
        traced!(self.system, "subscribe", WHOLE, self.inner.subscribe())
    }
}

#[async_trait::async_trait]
impl KeyStore for TracedStore {
    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError> {
        traced!(
            self.system,
            "create_api_key",
            WHOLE,
            self.inner.create_api_key(actor, new)
        )
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        traced!(
            self.system,
            "list_api_keys",
            WHOLE,
            self.inner.list_api_keys()
        )
    }

    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError> {
        traced!(
            self.system,
            "revoke_api_key",
            WHOLE,
            self.inner.revoke_api_key(actor, id)
        )
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        // The secret itself is never recorded.
        traced!(
            self.system,
            "authenticate",
            WHOLE,
            self.inner.authenticate(secret)
        )
    }
}

#[async_trait::async_trait]
impl AdminStore for TracedStore {
    async fn create_environment_with(
        &self,
        actor: &Actor,
        new: &NewEnvironment,
    ) -> Result<Environment, StoreError> {
        traced!(
            self.system,
            "create_environment",
            Some(new.key.as_str()),
            self.inner.create_environment_with(actor, new)
        )
    }

    async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, StoreError> {
        traced!(
            self.system,
            "update_environment",
            Some(key),
            self.inner.update_environment(actor, key, update)
        )
    }

    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError> {
        traced!(
            self.system,
            "list_flags",
            Some(env),
            self.inner.list_flags(env, filter)
        )
    }

    async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        traced!(
            self.system,
            "put_flag",
            Some(env),
            self.inner.put_flag(actor, env, key, doc, expected_version)
        )
    }

    async fn set_flag_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        traced!(
            self.system,
            "set_flag_archived",
            Some(env),
            self.inner
                .set_flag_archived(actor, env, key, archived, expected_version)
        )
    }

    async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        traced!(
            self.system,
            "delete_flag",
            Some(env),
            self.inner.delete_flag(actor, env, key, expected_version)
        )
    }

    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError> {
        traced!(
            self.system,
            "list_segments",
            Some(env),
            self.inner.list_segments(env, filter)
        )
    }

    async fn put_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        traced!(
            self.system,
            "put_segment",
            Some(env),
            self.inner
                .put_segment(actor, env, key, doc, expected_version)
        )
    }

    async fn set_segment_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        traced!(
            self.system,
            "set_segment_archived",
            Some(env),
            self.inner
                .set_segment_archived(actor, env, key, archived, expected_version)
        )
    }

    async fn delete_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        traced!(
            self.system,
            "delete_segment",
            Some(env),
            self.inner.delete_segment(actor, env, key, expected_version)
        )
    }

    async fn update_segment_targets(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        update: &SegmentTargetsUpdate,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        traced!(
            self.system,
            "update_segment_targets",
            Some(env),
            self.inner
                .update_segment_targets(actor, env, key, update, expected_version)
        )
    }

    async fn set_killed(
        &self,
        actor: &Actor,
        env: &str,
        flag_key: &str,
        killed: bool,
    ) -> Result<bool, StoreError> {
        traced!(
            self.system,
            "set_killed",
            Some(env),
            self.inner.set_killed(actor, env, flag_key, killed)
        )
    }

    async fn import_with_progress(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<ImportOutcome>, BatchError> {
        traced!(
            self.system,
            "import",
            Some(env),
            self.inner.import_with_progress(actor, env, items, progress)
        )
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError> {
        traced!(
            self.system,
            "killed_flags",
            Some(env),
            self.inner.killed_flags(env)
        )
    }

    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError> {
        traced!(
            self.system,
            "set_override",
            Some(env),
            self.inner.set_override(actor, env, key, variation)
        )
    }

    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        traced!(
            self.system,
            "remove_override",
            Some(env),
            self.inner.remove_override(actor, env, key)
        )
    }

    async fn get_override(
        &self,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        traced!(
            self.system,
            "get_override",
            Some(env),
            self.inner.get_override(env, key)
        )
    }

    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError> {
        traced!(
            self.system,
            "list_overrides",
            Some(env),
            self.inner.list_overrides(env, flag_key)
        )
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        traced!(
            self.system,
            "audit_log",
            query.env.as_deref(),
            self.inner.audit_log(query)
        )
    }

    async fn flag_last_changes(
        &self,
        env: &str,
    ) -> Result<HashMap<String, LastChange>, StoreError> {
        traced!(
            self.system,
            "flag_last_changes",
            Some(env),
            self.inner.flag_last_changes(env)
        )
    }

    fn big_segment_members(&self) -> Option<Arc<dyn BigSegmentMembers>> {
        let members = self.inner.big_segment_members()?;
        Some(TracedMembers::wrap(members, self.system))
    }
}

/// Any [`BigSegmentMembers`], each call a span, and each upload's chunks and commit too.
pub(crate) struct TracedMembers {
    inner: Arc<dyn BigSegmentMembers>,
    system: Option<&'static str>,
}

impl TracedMembers {
    /// `inner`, traced; `system` as for [`TracedStore::wrap`] (`redis`, `postgresql`).
    pub(crate) fn wrap(
        inner: Arc<dyn BigSegmentMembers>,
        system: Option<&'static str>,
    ) -> Arc<dyn BigSegmentMembers> {
        Arc::new(TracedMembers { inner, system })
    }
}

#[async_trait::async_trait]
impl BigSegmentMembers for TracedMembers {
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        let upload = traced!(
            self.system,
            "begin_upload",
            Some(env),
            self.inner.begin_upload(env, segment, generation, fresh)
        )?;
        Ok(Box::new(TracedUpload {
            inner: upload,
            system: self.system,
            env: env.to_owned(),
        }))
    }

    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, StoreError> {
        traced!(
            self.system,
            "memberships",
            Some(env),
            self.inner.memberships(env, context_hashes)
        )
    }

    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError> {
        traced!(
            self.system,
            "synchronized_on",
            Some(env),
            self.inner.synchronized_on(env)
        )
    }

    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        traced!(
            self.system,
            "set_synchronized_on",
            Some(env),
            self.inner.set_synchronized_on(env, unix_ms)
        )
    }

    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError> {
        traced!(
            self.system,
            "clear_generation",
            Some(env),
            self.inner.clear_generation(env, segment, generation)
        )
    }

    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError> {
        traced!(
            self.system,
            "copy_generation",
            Some(env),
            self.inner.copy_generation(env, segment, generation, into)
        )
    }
}

/// An upload under way, each chunk and the commit a span.
struct TracedUpload {
    inner: Box<dyn MemberUpload>,
    system: Option<&'static str>,
    env: String,
}

#[async_trait::async_trait]
impl MemberUpload for TracedUpload {
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), StoreError> {
        traced!(
            self.system,
            "upload_apply",
            Some(self.env.as_str()),
            self.inner.apply(changes)
        )
    }

    async fn commit(
        self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError> {
        let TracedUpload { inner, system, env } = *self;
        traced!(
            system,
            "upload_commit",
            Some(env.as_str()),
            inner.commit(copy)
        )
    }
}
