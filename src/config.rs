//! Server settings that come from the environment: listen port, model path, CORS origins and the
//! CPU budget.
//!
//! Every function here takes an environment lookup (`&dyn Fn(&str) -> Option<String>`) instead of
//! reading `std::env` itself, so the rules are tested without touching the process environment.
//! [`process_env`] is the lookup to use in production.

use std::path::{Path, PathBuf};

/// Port used when neither `--port` nor an FC port variable is set (FC's default CAPort).
pub const DEFAULT_PORT: u16 = 9000;
/// Weights location, relative to the code directory (`FC_FUNC_CODE_PATH`) or the working directory.
pub const DEFAULT_MODEL: &str = "model/resnet18.safetensors";
/// FC 3.0's synchronous request body limit, 32 MB (FC 3.0 limits, docs/deploy.md), as the
/// default body cap.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Environment variables consulted for the port, in order: FC's documented variable, then the one
/// Serverless Devs' local emulation sets.
const PORT_VARS: [&str; 2] = ["FC_CUSTOM_LISTEN_PORT", "FC_SERVER_PORT"];

/// Browser origins allowed to call the HTTP routes from other sites (comma-separated).
pub const CORS_ORIGINS_VAR: &str = "RESNET18_FC_CORS_ORIGINS";

/// Why a setting from the environment is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A port variable is set but is not a number in `0..=65535`.
    #[error(
        "{var}={value:?} is not a TCP port; set it to a number between 1 and 65535 or unset it"
    )]
    BadPort {
        /// The variable name.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

/// Reads a variable from the real process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The port to listen on: `--port` if given, else `FC_CUSTOM_LISTEN_PORT`, else `FC_SERVER_PORT`,
/// else 9000. Empty variables count as unset.
pub fn resolve_port(
    flag: Option<u16>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<u16, ConfigError> {
    if let Some(port) = flag {
        return Ok(port);
    }
    for var in PORT_VARS {
        let Some(value) = env(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        return value
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadPort { var, value });
    }
    Ok(DEFAULT_PORT)
}

/// The weights file: `--model` if given, else [`DEFAULT_MODEL`] under `FC_FUNC_CODE_PATH` when
/// that is set (FC unpacks the code there, usually `/code`), else relative to the working dir.
pub fn resolve_model_path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    match env("FC_FUNC_CODE_PATH").filter(|v| !v.trim().is_empty()) {
        Some(code) => Path::new(&code).join(DEFAULT_MODEL),
        None => PathBuf::from(DEFAULT_MODEL),
    }
}

/// Origins listed in `RESNET18_FC_CORS_ORIGINS`: comma-separated, blanks around entries and a
/// trailing `/` removed (browsers send `https://app.example`, people paste
/// `https://app.example/`), empty entries dropped; `*` allows every origin. Unset or empty: none,
/// which turns CORS off.
pub fn cors_origins(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    env(CORS_ORIGINS_VAR)
        .unwrap_or_default()
        .split(',')
        .map(|entry| entry.trim().trim_end_matches('/').to_string())
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// Number of CPUs this process may really use: the smallest of the scheduler's view
/// (`available_parallelism`), the cgroup v2 `cpu.max` quota and the cgroup v1 CFS quota, rounded
/// up (an FC instance with 0.35 vCPU gets 1). Always at least 1.
pub fn cpu_budget() -> usize {
    let scheduler = std::thread::available_parallelism().map_or(1, |n| n.get());
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| parse_cgroup_v2_cpu_max(&s));
    let v1 = read_cgroup_v1_quota();
    combine_cpu_limits(scheduler, [v2, v1])
}

/// Smallest of `scheduler` and the known quotas, at least 1.
pub fn combine_cpu_limits(scheduler: usize, quotas: [Option<usize>; 2]) -> usize {
    quotas
        .into_iter()
        .flatten()
        .fold(scheduler, usize::min)
        .max(1)
}

/// CPUs allowed by a cgroup v2 `cpu.max` line (`"<quota> <period>"` or `"max <period>"`),
/// rounded up; `None` when unlimited or unreadable.
pub fn parse_cgroup_v2_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next().unwrap_or("100000");
    if quota == "max" {
        return None;
    }
    quota_to_cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// CPUs allowed by cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota `-1` = unlimited).
pub fn parse_cgroup_v1_quota(quota_us: &str, period_us: &str) -> Option<usize> {
    let quota: i64 = quota_us.trim().parse().ok()?;
    let period: i64 = period_us.trim().parse().ok()?;
    if quota <= 0 {
        return None;
    }
    quota_to_cpus(u64::try_from(quota).ok()?, u64::try_from(period).ok()?)
}

fn read_cgroup_v1_quota() -> Option<usize> {
    let dir = Path::new("/sys/fs/cgroup/cpu");
    let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    parse_cgroup_v1_quota(&quota, &period)
}

fn quota_to_cpus(quota: u64, period: u64) -> Option<usize> {
    if period == 0 || quota == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn port_prefers_flag_then_fc_custom_listen_port_then_fc_server_port() {
        let both = env_of(&[
            ("FC_CUSTOM_LISTEN_PORT", "9100"),
            ("FC_SERVER_PORT", "9200"),
        ]);
        assert_eq!(resolve_port(Some(8080), &both), Ok(8080));
        assert_eq!(resolve_port(None, &both), Ok(9100));
        let server_only = env_of(&[("FC_SERVER_PORT", "9200")]);
        assert_eq!(resolve_port(None, &server_only), Ok(9200));
        let empty_first = env_of(&[("FC_CUSTOM_LISTEN_PORT", ""), ("FC_SERVER_PORT", "9300")]);
        assert_eq!(resolve_port(None, &empty_first), Ok(9300));
        assert_eq!(resolve_port(None, &env_of(&[])), Ok(9000));
    }

    #[test]
    fn bad_port_variable_is_an_error_naming_the_variable() {
        let env = env_of(&[("FC_CUSTOM_LISTEN_PORT", "nine")]);
        assert_eq!(
            resolve_port(None, &env),
            Err(ConfigError::BadPort {
                var: "FC_CUSTOM_LISTEN_PORT",
                value: "nine".into()
            })
        );
    }

    #[test]
    fn model_path_is_resolved_against_the_code_directory() {
        let fc = env_of(&[("FC_FUNC_CODE_PATH", "/code/")]);
        assert_eq!(
            resolve_model_path(None, &fc),
            PathBuf::from("/code/model/resnet18.safetensors")
        );
        assert_eq!(
            resolve_model_path(None, &env_of(&[])),
            PathBuf::from("model/resnet18.safetensors")
        );
        assert_eq!(
            resolve_model_path(Some(Path::new("/w/x.safetensors")), &fc),
            PathBuf::from("/w/x.safetensors")
        );
    }

    #[test]
    fn cors_origins_are_trimmed_and_empty_means_none() {
        assert!(cors_origins(&env_of(&[])).is_empty());
        assert!(cors_origins(&env_of(&[(CORS_ORIGINS_VAR, " , ")])).is_empty());
        let env = env_of(&[(
            CORS_ORIGINS_VAR,
            " https://app.example/ ,http://localhost:5173,,*",
        )]);
        assert_eq!(
            cors_origins(&env),
            ["https://app.example", "http://localhost:5173", "*"]
        );
    }

    #[test]
    fn cgroup_quotas_round_up_and_unlimited_is_none() {
        assert_eq!(parse_cgroup_v2_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cgroup_v2_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("35000 100000"), Some(1));
        assert_eq!(parse_cgroup_v2_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("garbage"), None);
        assert_eq!(parse_cgroup_v1_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cgroup_v1_quota("400000\n", "100000\n"), Some(4));
        assert_eq!(parse_cgroup_v1_quota("50000", "100000"), Some(1));
    }

    #[test]
    fn cpu_budget_is_the_smallest_limit_and_at_least_one() {
        assert_eq!(combine_cpu_limits(16, [Some(2), None]), 2);
        assert_eq!(combine_cpu_limits(2, [Some(8), Some(4)]), 2);
        assert_eq!(combine_cpu_limits(16, [None, Some(3)]), 3);
        assert_eq!(combine_cpu_limits(0, [None, None]), 1);
        assert!(cpu_budget() >= 1);
    }
}
