//! Runs one benchmark case a fixed number of times, for instruction counting.
//!
//! `cargo run --release -p flags-bench --example eval_count -- <case> <flagd|launchdarkly> <n>`
//! evaluates fixture `<case>` (a name from `flags_bench::fixtures()`) `n` times on one side.
//! Under `valgrind --tool=callgrind`, the difference between two runs with different `n`,
//! divided by the difference in `n`, is the instruction count of one evaluation, free of setup
//! and of the noise that wall-clock timing suffers on a shared machine.

use std::hint::black_box;
use std::process::ExitCode;

use flags_bench::{FlagdSide, PeerSide, fixtures};
use launchdarkly_server_sdk_evaluation as ld;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [case, side, n] = args.as_slice() else {
        eprintln!("usage: eval_count <case> <flagd|launchdarkly> <iterations>");
        return ExitCode::FAILURE;
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("iterations must be a whole number, not {n:?}");
        return ExitCode::FAILURE;
    };
    let Some(fixture) = fixtures().into_iter().find(|f| f.name == case) else {
        eprintln!("no case named {case:?}");
        return ExitCode::FAILURE;
    };
    match side.as_str() {
        "flagd" => {
            let flagd = match FlagdSide::new(&fixture) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let evaluator = flagd.evaluator();
            for _ in 0..n {
                black_box(evaluator.evaluate(black_box(flagd.flag_key), black_box(&flagd.context)));
            }
        }
        "launchdarkly" => {
            let peer = match PeerSide::new(&fixture) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            for _ in 0..n {
                black_box(ld::evaluate(
                    black_box(&peer.store),
                    black_box(&peer.flag),
                    black_box(&peer.context),
                    None,
                ));
            }
        }
        other => {
            eprintln!("side must be flagd or launchdarkly, not {other:?}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
