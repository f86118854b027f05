//! The settings as flagd's YAML configuration embeds them: a list under `events.exporters`,
//! each item `{kind: ..., ...settings}`. flagd's own enum is in flagd; this one has the same
//! shape, to show the settings structs work inside it.

use flags_export::{NatsSettings, PostgresSettings, RedisSettings, WebhookSettings};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ExporterConfig {
    Postgres(PostgresSettings),
    Redis(RedisSettings),
    Nats(NatsSettings),
    Webhook(WebhookSettings),
}

#[derive(Debug, Deserialize)]
struct Events {
    exporters: Vec<ExporterConfig>,
}

fn parse(yaml: &str) -> Result<Events, String> {
    serde_norway::from_str(yaml).map_err(|e| e.to_string())
}

#[test]
fn every_exporter_reads_from_a_tagged_list_with_defaults() {
    let events = parse(
        "exporters:
  - kind: postgres
    url: postgres://flagd@db/analytics
  - kind: redis
    url: redis://cache:6379
    max_len: 500
  - kind: nats
    url: nats://nats:4222
    create_stream: false
  - kind: webhook
    url: http://collector/hook
    secret: s3cret
    meta: {environment: production}
    timeout_ms: 2500
",
    )
    .unwrap();
    let [
        ExporterConfig::Postgres(pg),
        ExporterConfig::Redis(redis),
        ExporterConfig::Nats(nats),
        ExporterConfig::Webhook(hook),
    ] = &events.exporters[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!((pg.table.as_str(), pg.max_connections), ("flagd_events", 2));
    assert_eq!(
        (redis.stream.as_str(), redis.max_len),
        ("flagd:events", Some(500))
    );
    assert_eq!(
        (
            nats.subject.as_str(),
            nats.stream.as_str(),
            nats.create_stream
        ),
        ("flagd.events", "FLAGD_EVENTS", false)
    );
    assert_eq!(
        (hook.secret.as_deref(), hook.timeout_ms),
        (Some("s3cret"), 2500)
    );
    assert_eq!(hook.meta["environment"], "production");
    assert!(!format!("{events:?}").contains("s3cret"));
}

#[test]
fn unknown_fields_are_refused_inside_the_tagged_list() {
    for yaml in [
        "exporters: [{kind: postgres, url: x, tabel: t}]",
        "exporters: [{kind: redis, url: x, maxlen: 3}]",
        "exporters: [{kind: nats, url: x, topic: t}]",
        "exporters: [{kind: webhook, url: x, timeout: 3}]",
        "exporters: [{kind: webhook}]",
    ] {
        assert!(parse(yaml).is_err(), "{yaml}");
    }
}
