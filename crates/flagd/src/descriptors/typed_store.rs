//! A store that refuses writes of declared flags whose variations are not of the declared
//! type, around any [`AdminStore`].

use std::collections::HashMap;
use std::sync::Arc;

use flags_core::ItemKind;
use flags_store::{
    Actor, AdminStore, ApiKey, AuditEntry, AuditQuery, BatchError, BigSegmentMembers, Change,
    ChangeFeed, ChangeSubscription, CreatedApiKey, EnvSnapshot, Environment, EnvironmentUpdate,
    ImportItem, ImportOutcome, KeyStore, LastChange, ListFilter, NewApiKey, NewEnvironment,
    Override, OverrideKey, SegmentTargetsUpdate, StoreError, StoredFlag, StoredSegment,
};
use serde_json::Value;

use super::{DescriptorWatcher, Registry};

/// Wraps a store so that writing a flag document (`put_flag`, and the flags of an `import`)
/// of a flag the current descriptor set declares is refused with [`StoreError::Invalid`] at
/// `variations[i]` when a variation is not of the declared type, naming the flag, the type and
/// the variation. Everything else goes to the inner store unchanged, which validates the rest
/// as it always does. So the admin API keeps doing no validation of its own: the store it is
/// given decides.
pub struct TypedStore {
    inner: Arc<dyn AdminStore>,
    declared: Arc<DescriptorWatcher>,
}

impl TypedStore {
    /// `inner`, checking flag writes against the registry `declared` holds at each write.
    pub fn new(inner: Arc<dyn AdminStore>, declared: Arc<DescriptorWatcher>) -> TypedStore {
        TypedStore { inner, declared }
    }
}

/// The type check of one flag document: a refusal when `doc`'s `variations` is a list holding
/// a value of another type than `key`'s declared one. Other shapes are left to the store.
fn check(registry: &Registry, key: &str, doc: &Value) -> Result<(), StoreError> {
    let Some(Value::Array(variations)) = doc.get("variations") else {
        return Ok(());
    };
    registry
        .check_variations(key, variations)
        .map_err(|mismatch| StoreError::invalid(mismatch.path(), mismatch.message))
}

#[async_trait::async_trait]
impl ChangeFeed for TypedStore {
    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        self.inner.list_environments().await
    }

    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError> {
        self.inner.get_environment(key).await
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError> {
        self.inner.get_flag(env, key).await
    }

    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError> {
        self.inner.get_segment(env, key).await
    }

    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        self.inner.snapshot(env).await
    }

    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError> {
        self.inner.changes_since(env, cursor).await
    }

    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        self.inner.subscribe().await
    }
}

#[async_trait::async_trait]
impl KeyStore for TypedStore {
    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError> {
        self.inner.create_api_key(actor, new).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.inner.list_api_keys().await
    }

    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError> {
        self.inner.revoke_api_key(actor, id).await
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        self.inner.authenticate(secret).await
    }
}

#[async_trait::async_trait]
impl AdminStore for TypedStore {
    async fn create_environment_with(
        &self,
        actor: &Actor,
        new: &NewEnvironment,
    ) -> Result<Environment, StoreError> {
        self.inner.create_environment_with(actor, new).await
    }

    async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, StoreError> {
        self.inner.update_environment(actor, key, update).await
    }

    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError> {
        self.inner.list_flags(env, filter).await
    }

    async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        check(&self.declared.registry(), key, &doc)?;
        self.inner
            .put_flag(actor, env, key, doc, expected_version)
            .await
    }

    async fn set_flag_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        self.inner
            .set_flag_archived(actor, env, key, archived, expected_version)
            .await
    }

    async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner
            .delete_flag(actor, env, key, expected_version)
            .await
    }

    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError> {
        self.inner.list_segments(env, filter).await
    }

    async fn put_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        self.inner
            .put_segment(actor, env, key, doc, expected_version)
            .await
    }

    async fn set_segment_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        self.inner
            .set_segment_archived(actor, env, key, archived, expected_version)
            .await
    }

    async fn delete_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.inner
            .delete_segment(actor, env, key, expected_version)
            .await
    }

    async fn update_segment_targets(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        update: &SegmentTargetsUpdate,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        self.inner
            .update_segment_targets(actor, env, key, update, expected_version)
            .await
    }

    async fn set_killed(
        &self,
        actor: &Actor,
        env: &str,
        flag_key: &str,
        killed: bool,
    ) -> Result<bool, StoreError> {
        self.inner.set_killed(actor, env, flag_key, killed).await
    }

    async fn import_with_progress(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<ImportOutcome>, BatchError> {
        let registry = self.declared.registry();
        for item in items.iter().filter(|item| item.kind == ItemKind::Flag) {
            check(&registry, &item.key, &item.doc)
                .map_err(|error| BatchError::item(ItemKind::Flag, &item.key, error))?;
        }
        self.inner
            .import_with_progress(actor, env, items, progress)
            .await
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.inner.killed_flags(env).await
    }

    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError> {
        self.inner.set_override(actor, env, key, variation).await
    }

    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        self.inner.remove_override(actor, env, key).await
    }

    async fn get_override(
        &self,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        self.inner.get_override(env, key).await
    }

    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError> {
        self.inner.list_overrides(env, flag_key).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(query).await
    }

    async fn flag_last_changes(
        &self,
        env: &str,
    ) -> Result<HashMap<String, LastChange>, StoreError> {
        self.inner.flag_last_changes(env).await
    }

    fn big_segment_members(&self) -> Option<Arc<dyn BigSegmentMembers>> {
        self.inner.big_segment_members()
    }
}
