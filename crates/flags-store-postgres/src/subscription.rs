//! Following changes with LISTEN/NOTIFY.

use flags_store::{Change, ChangeSubscription, StoreError};
use serde::Deserialize;
use sqlx::postgres::{PgListener, PgPool};

use crate::error::db;
use crate::{CHANNEL, change_by_seq};

/// A subscription to every environment's changes, on a connection of its own.
///
/// It does not reconnect by itself: a lost connection means notifications were lost, so the
/// caller is told (an [`StoreError::Unavailable`] from `next`), subscribes again and catches up
/// with `changes_since`. After an error every call fails.
pub struct PgSubscription {
    listener: PgListener,
    pool: PgPool,
    finished: bool,
}

impl std::fmt::Debug for PgSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSubscription")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// What a notification carries: the change, or (when it was too large) where to find it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    Whole(Change),
    Seq { seq: u64 },
}

impl PgSubscription {
    /// Connects and issues `LISTEN`; every change committed after this returns is delivered.
    pub(crate) async fn start(pool: PgPool) -> Result<PgSubscription, StoreError> {
        let mut listener = PgListener::connect_with(&pool).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        Ok(PgSubscription {
            listener,
            pool,
            finished: false,
        })
    }

    async fn receive(&mut self) -> Result<Change, StoreError> {
        loop {
            // `try_recv` reports a lost connection as `None` instead of silently reconnecting
            // (which `recv` does), so the loss reaches the caller.
            let Some(notification) = self.listener.try_recv().await.map_err(db)? else {
                return Err(StoreError::unavailable(
                    "the connection to PostgreSQL was lost; changes may have been missed",
                ));
            };
            match serde_json::from_str::<Payload>(notification.payload()) {
                Ok(Payload::Whole(change)) => return Ok(change),
                Ok(Payload::Seq { seq }) => {
                    return change_by_seq(&self.pool, seq).await?.ok_or_else(|| {
                        StoreError::internal(format!("change {seq} was announced but is missing"))
                    });
                }
                Err(e) => {
                    // Not ours (someone else notifying on the channel); nothing was missed.
                    tracing::warn!(
                        channel = CHANNEL,
                        error = %e,
                        "ignoring a notification that is not a flagd change"
                    );
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ChangeSubscription for PgSubscription {
    async fn next(&mut self) -> Result<Change, StoreError> {
        if self.finished {
            return Err(StoreError::unavailable(
                "this subscription has ended; subscribe again and catch up with changes_since",
            ));
        }
        let result = self.receive().await;
        if result.is_err() {
            self.finished = true;
        }
        result
    }
}
