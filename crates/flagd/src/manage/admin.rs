//! [`Admin`]: the operations the management commands need, and [`StoreAdmin`], which does them
//! in a store directly.

use std::collections::HashMap;
use std::sync::Arc;

use flags_store::{
    Actor, AdminStore, ApiKey, CreatedApiKey, Environment, EnvironmentUpdate, ListFilter,
    NewApiKey, NewEnvironment, StoreError, StoredFlag,
};
use serde_json::Value;

use super::{EXIT_FAILED, EXIT_NOT_FOUND};

/// What the management commands do with environments, keys and flags, wherever those live.
///
/// Every implementation gives the same answers and the same messages for the same data: the
/// store's messages (`environment "staging" not found`), which the admin API passes on as the
/// `detail` of its problem documents.
#[async_trait::async_trait]
pub trait Admin: Send + Sync {
    /// Creates an environment.
    async fn create_environment(&self, new: &NewEnvironment) -> Result<Environment, Failure>;

    /// Changes an environment's name or colour; returns it as it is now.
    async fn update_environment(
        &self,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Failure>;

    /// Every environment, sorted by key.
    async fn list_environments(&self) -> Result<Vec<Environment>, Failure>;

    /// Creates an API key; the secret is in the answer and nowhere else.
    async fn create_key(&self, new: &NewApiKey) -> Result<CreatedApiKey, Failure>;

    /// Every API key (revoked ones too), by id, never their secrets.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, Failure>;

    /// Revokes a key; revoking a revoked key changes nothing.
    async fn revoke_key(&self, id: u64) -> Result<ApiKey, Failure>;

    /// One flag, archived or not.
    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, Failure>;

    /// Every flag of an environment, archived ones too, sorted by key.
    async fn list_flags(&self, env: &str) -> Result<Vec<StoredFlag>, Failure>;

    /// Creates (`expected: None`) or replaces (`Some(current version)`) a flag; a version that
    /// is not the current one is [`Failure::Conflict`].
    async fn put_flag(
        &self,
        env: &str,
        key: &str,
        doc: Value,
        expected: Option<u64>,
    ) -> Result<StoredFlag, Failure>;

    /// Kills or unkills a flag; returns whether that changed anything.
    async fn set_killed(&self, env: &str, key: &str, killed: bool) -> Result<bool, Failure>;

    /// The killed flag keys of an environment, sorted.
    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, Failure>;
}

/// Why an [`Admin`] operation failed, grouped by the exit code it gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The environment, flag or key does not exist: exit code 1.
    #[error("{0}")]
    NotFound(String),
    /// A versioned write found another version (`None`: the item does not exist). The command
    /// says which item and which version it expected.
    #[error("{}", match current {
        Some(v) => format!("version conflict: the current version is {v}"),
        None => "version conflict: the item does not exist".to_owned(),
    })]
    Conflict {
        /// The item's current version.
        current: Option<u64>,
    },
    /// Anything else, said as it is to be shown: exit code 2.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::NotFound(_) => EXIT_NOT_FOUND,
            Failure::Conflict { .. } | Failure::Other(_) => EXIT_FAILED,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        match error {
            StoreError::NotFound { .. } => Failure::NotFound(error.to_string()),
            StoreError::Conflict { current_version } => Failure::Conflict {
                current: current_version,
            },
            other => Failure::Other(other.to_string()),
        }
    }
}

/// The actor the database route writes as, `cli:<login name>` (`cli` alone when the
/// environment names no user), so the audit log tells a person at a shell from the admin API's
/// keys and from `import`.
pub fn cli_actor(env: &HashMap<String, String>) -> Actor {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| env.get(*name).filter(|v| !v.trim().is_empty()));
    match user {
        Some(user) => Actor::named(&format!("cli:{}", user.trim())),
        None => Actor::named("cli"),
    }
}

/// [`Admin`] straight over a store, writing as one actor.
pub struct StoreAdmin {
    store: Arc<dyn AdminStore>,
    actor: Actor,
}

impl StoreAdmin {
    /// Works in `store`, recording `actor` in the audit log.
    pub fn new(store: Arc<dyn AdminStore>, actor: Actor) -> StoreAdmin {
        StoreAdmin { store, actor }
    }
}

#[async_trait::async_trait]
impl Admin for StoreAdmin {
    async fn create_environment(&self, new: &NewEnvironment) -> Result<Environment, Failure> {
        Ok(self.store.create_environment_with(&self.actor, new).await?)
    }

    async fn update_environment(
        &self,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Failure> {
        Ok(self
            .store
            .update_environment(&self.actor, key, update)
            .await?)
    }

    async fn list_environments(&self) -> Result<Vec<Environment>, Failure> {
        Ok(self.store.list_environments().await?)
    }

    async fn create_key(&self, new: &NewApiKey) -> Result<CreatedApiKey, Failure> {
        Ok(self.store.create_api_key(&self.actor, new).await?)
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, Failure> {
        Ok(self.store.list_api_keys().await?)
    }

    async fn revoke_key(&self, id: u64) -> Result<ApiKey, Failure> {
        Ok(self.store.revoke_api_key(&self.actor, id).await?)
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, Failure> {
        Ok(self.store.get_flag(env, key).await?)
    }

    async fn list_flags(&self, env: &str) -> Result<Vec<StoredFlag>, Failure> {
        Ok(self.store.list_flags(env, &ListFilter::default()).await?)
    }

    async fn put_flag(
        &self,
        env: &str,
        key: &str,
        doc: Value,
        expected: Option<u64>,
    ) -> Result<StoredFlag, Failure> {
        Ok(self
            .store
            .put_flag(&self.actor, env, key, doc, expected)
            .await?)
    }

    async fn set_killed(&self, env: &str, key: &str, killed: bool) -> Result<bool, Failure> {
        Ok(self.store.set_killed(&self.actor, env, key, killed).await?)
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, Failure> {
        Ok(self.store.killed_flags(env).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_names_the_user_at_the_shell() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(cli_actor(&env(&[("USER", "ada")])).name, "cli:ada");
        assert_eq!(cli_actor(&env(&[("LOGNAME", "bo")])).name, "cli:bo");
        assert_eq!(cli_actor(&env(&[("USER", " ")])).name, "cli");
        assert_eq!(cli_actor(&env(&[])).name, "cli");
        assert_eq!(cli_actor(&env(&[("USER", "ada")])).key_id, None);
    }
}
