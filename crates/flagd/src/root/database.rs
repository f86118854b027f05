//! Root mode's database when it may be down at start: a PostgreSQL store whose connections
//! open on first use, and whose schema migrations run before the first operation that finds
//! the database up. Until then every operation fails as unavailable, which the sync loop
//! answers with its backoff and `/readyz` reports as `CONNECTING`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flags_core::store::{
    Actor, AdminStore, ApiKey, AuditEntry, AuditQuery, BatchError, Change, ChangeSubscription,
    CreatedApiKey, EnvSnapshot, Environment, ImportItem, ImportOutcome, ListFilter, NewApiKey,
    Override, OverrideKey, SegmentTargetsUpdate, StoreError, StoredFlag, StoredSegment,
};
use flags_store_postgres::{PostgresConfig, PostgresStore};
use serde_json::Value;
use tokio::sync::Mutex;

/// A [`PostgresStore`] that migrates its schema before it is first used.
pub struct MigratingStore {
    inner: PostgresStore,
    migrated: AtomicBool,
    /// Held while migrations run, so concurrent first operations wait for one run.
    migrating: Mutex<()>,
}

impl MigratingStore {
    /// A store for the database at `url`. Nothing is opened yet; only the URL is checked.
    pub fn open(url: &str) -> Result<Arc<MigratingStore>, StoreError> {
        let inner = PostgresStore::connect_lazy(&PostgresConfig::new(url))?;
        Ok(Arc::new(MigratingStore {
            inner,
            migrated: AtomicBool::new(false),
            migrating: Mutex::new(()),
        }))
    }

    /// Applies the migrations unless that was done; fails as the database does.
    pub async fn ready(&self) -> Result<(), StoreError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let _running = self.migrating.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.migrate().await?;
        self.migrated.store(true, Ordering::Release);
        tracing::info!("database reachable; migrations applied");
        Ok(())
    }
}

#[async_trait::async_trait]
impl AdminStore for MigratingStore {
    async fn create_environment(
        &self,
        actor: &Actor,
        key: &str,
        name: &str,
    ) -> Result<Environment, StoreError> {
        self.ready().await?;
        self.inner.create_environment(actor, key, name).await
    }

    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        self.ready().await?;
        self.inner.list_environments().await
    }

    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError> {
        self.ready().await?;
        self.inner.get_environment(key).await
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError> {
        self.ready().await?;
        self.inner.get_flag(env, key).await
    }

    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError> {
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
        self.inner
            .delete_flag(actor, env, key, expected_version)
            .await
    }

    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError> {
        self.ready().await?;
        self.inner.get_segment(env, key).await
    }

    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError> {
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
        self.inner.set_killed(actor, env, flag_key, killed).await
    }

    async fn import(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
    ) -> Result<Vec<ImportOutcome>, BatchError> {
        self.ready().await?;
        self.inner.import(actor, env, items).await
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.ready().await?;
        self.inner.killed_flags(env).await
    }

    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError> {
        self.ready().await?;
        self.inner.set_override(actor, env, key, variation).await
    }

    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        self.ready().await?;
        self.inner.remove_override(actor, env, key).await
    }

    async fn get_override(
        &self,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        self.ready().await?;
        self.inner.get_override(env, key).await
    }

    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError> {
        self.ready().await?;
        self.inner.list_overrides(env, flag_key).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.ready().await?;
        self.inner.audit_log(query).await
    }

    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError> {
        self.ready().await?;
        self.inner.create_api_key(actor, new).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.ready().await?;
        self.inner.list_api_keys().await
    }

    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError> {
        self.ready().await?;
        self.inner.revoke_api_key(actor, id).await
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        self.ready().await?;
        self.inner.authenticate(secret).await
    }

    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        self.ready().await?;
        self.inner.snapshot(env).await
    }

    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError> {
        self.ready().await?;
        self.inner.changes_since(env, cursor).await
    }

    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        self.ready().await?;
        self.inner.subscribe().await
    }
}
