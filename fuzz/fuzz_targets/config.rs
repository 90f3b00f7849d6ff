//! The gateway config loader over arbitrary text: it must never panic, what it accepts must be
//! valid, and a config the operator renders (`to_yaml`) must load back as the same config.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wsfleet_config::GatewayConfig;

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let config = match GatewayConfig::from_yaml(text) {
        Ok(config) => config,
        Err(err) => {
            assert!(!err.field.is_empty(), "an error that names no field: {err}");
            return;
        }
    };
    assert_eq!(config.validate(), Ok(()), "loaded but invalid");
    // Durations are rendered in whole milliseconds: finer ones cannot come back the same.
    if durations(&config).all(|duration| duration.subsec_nanos() % 1_000_000 == 0) {
        let rendered = config.to_yaml();
        match GatewayConfig::from_yaml(&rendered) {
            Ok(again) => assert_eq!(again, config, "rendered:\n{rendered}"),
            Err(err) => panic!("the rendered config does not load ({err}):\n{rendered}"),
        }
    }
});

fn durations(config: &GatewayConfig) -> impl Iterator<Item = Duration> {
    [
        Some(config.upstream.connect_timeout),
        Some(config.upstream.handshake_timeout),
        config.auth.jwt.as_ref().map(|jwt| jwt.leeway),
        Some(config.limits.handshake_timeout),
        config.heartbeat.map(|heartbeat| heartbeat.interval),
        config.heartbeat.map(|heartbeat| heartbeat.timeout),
        Some(config.drain.grace_period),
    ]
    .into_iter()
    .flatten()
}
