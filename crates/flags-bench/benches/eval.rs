//! Evaluation latency, flagd against LaunchDarkly's own Rust evaluator.
//!
//! One criterion group per fixture of `flags_bench::fixtures()`, each holding a `flagd` and a
//! `launchdarkly` function, so a single run yields comparable medians. Parsing, compiling and
//! context construction happen before the timed closure; the closure is only the evaluation call
//! through each side's public API.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flags_bench::{FlagdSide, PeerSide, fixtures};
use launchdarkly_server_sdk_evaluation as ld;

fn evaluation(c: &mut Criterion) {
    for fixture in fixtures() {
        // A fixture the engines cannot load is a broken benchmark, not a result to report.
        let flagd = match FlagdSide::new(&fixture) {
            Ok(side) => side,
            Err(e) => panic!("{e}"),
        };
        let peer = match PeerSide::new(&fixture) {
            Ok(side) => side,
            Err(e) => panic!("{e}"),
        };

        let mut group = c.benchmark_group(fixture.name);
        let evaluator = flagd.evaluator();
        group.bench_function("flagd", |b| {
            b.iter(|| {
                black_box(evaluator.evaluate(black_box(flagd.flag_key), black_box(&flagd.context)))
            });
        });
        group.bench_function("launchdarkly", |b| {
            b.iter(|| {
                black_box(ld::evaluate(
                    black_box(&peer.store),
                    black_box(&peer.flag),
                    black_box(&peer.context),
                    None,
                ))
            });
        });
        group.finish();
    }
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
