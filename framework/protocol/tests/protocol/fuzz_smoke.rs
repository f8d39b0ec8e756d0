//! Runs the fuzz targets (framework/protocol/fuzz) on seeded mutations of valid wire values, in
//! every CI run: a bounded, deterministic stand-in for libFuzzer that catches panics on bad
//! input. The real fuzzers run with `cargo fuzz` (see framework/protocol/README.md).

#[path = "../../fuzz/targets.rs"]
mod targets;

use switchboard_protocol::Csprng;

/// One mutation of `input`, chosen by `rng`: bit flip, byte set, insert, delete, truncate,
/// duplicate a span, or splice in a JSON token.
fn mutate(input: &[u8], rng: &mut Csprng) -> Vec<u8> {
    let mut out = input.to_vec();
    let [op, a, b, c] = rng.array::<4>();
    let len = out.len().max(1);
    let at = (usize::from(a) << 8 | usize::from(b)) % len;
    match op % 8 {
        0 => {
            if let Some(byte) = out.get_mut(at) {
                *byte ^= 1 << (c % 8);
            }
        }
        1 => {
            if let Some(byte) = out.get_mut(at) {
                *byte = c;
            }
        }
        2 => out.insert(at.min(out.len()), c),
        3 => {
            if at < out.len() {
                out.remove(at);
            }
        }
        4 => out.truncate(at),
        5 => {
            let end = (at + usize::from(c)).min(out.len());
            let span = out[at.min(end)..end].to_vec();
            out.splice(at.min(out.len())..at.min(out.len()), span);
        }
        6 => {
            let tokens: [&[u8]; 8] = [
                b"null",
                b"[]",
                b"{}",
                b"-1",
                b"1e999",
                b"\"\"",
                b"18446744073709551616",
                b"\"\\u0000\"",
            ];
            let token = tokens[usize::from(c) % tokens.len()];
            out.splice(at.min(out.len())..at.min(out.len()), token.iter().copied());
        }
        _ => {
            // Replace a digit run's first digit: numbers and hex change meaning.
            if let Some(pos) = out.iter().skip(at).position(u8::is_ascii_digit) {
                out[at + pos] = b'0' + c % 10;
            }
        }
    }
    out
}

#[test]
fn fuzz_targets_survive_mutated_wire_values() {
    let seeds = targets::fixture().expect("fixture builds").seeds;
    assert_eq!(seeds.len(), 8);
    let mut rng = Csprng::from_seed([0xf0; 32]);
    let targets: [fn(&[u8]); 7] = [
        targets::decode_wire,
        targets::open_message,
        targets::apply_commit,
        targets::open_wrap,
        targets::accept_thread_open,
        targets::restore_snapshot,
        targets::accept_history,
    ];
    let mut runs = 0;
    for seed in &seeds {
        // The valid seed itself, then chains of up to 4 mutations.
        for target in targets {
            target(seed);
        }
        for _ in 0..1000 {
            let mut input = seed.clone();
            for _ in 0..=(rng.array::<1>()[0] % 4) {
                input = mutate(&input, &mut rng);
            }
            for target in targets {
                target(&input);
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 8 * 1000 * 7);
}
