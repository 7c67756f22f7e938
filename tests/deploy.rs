//! Deployment artefacts: `s.yaml` (and its two-function fallback), `bootstrap`,
//! `scripts/package.sh`, and the package started exactly as Function Compute starts it.
//!
//! FC facts used here (../shared/docs/platform.md): vCPU 0.05–16 in steps of 0.05, memory
//! 128–32768 MB in steps of 64, vCPU:GB between 1:1 and 1:4, timeout 1–86 400 s (fc3 default
//! 3 s), instanceConcurrency 1–200, Initializer ≤ 300 s, server on `0.0.0.0:$FC_CUSTOM_LISTEN_PORT`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Root of the checkout (where s.yaml, bootstrap and scripts/ live).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The parts of an fc3 s.yaml these tests look at.
mod syaml {
    use super::*;

    #[derive(Debug, Deserialize)]
    pub struct SYaml {
        pub edition: String,
        #[serde(default)]
        pub vars: BTreeMap<String, String>,
        pub resources: BTreeMap<String, Resource>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Resource {
        pub component: String,
        #[serde(default)]
        pub actions: BTreeMap<String, Vec<Action>>,
        pub props: Props,
    }

    #[derive(Debug, Deserialize)]
    pub struct Action {
        pub run: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Props {
        pub region: String,
        pub function_name: String,
        pub runtime: String,
        pub code: String,
        pub cpu: f64,
        pub memory_size: u64,
        pub timeout: Option<u64>,
        pub instance_concurrency: Option<u64>,
        pub custom_runtime_config: CustomRuntimeConfig,
        pub instance_lifecycle_config: Option<Lifecycle>,
        #[serde(default)]
        pub environment_variables: BTreeMap<String, String>,
        pub role: Option<String>,
        #[serde(default)]
        pub triggers: Vec<Trigger>,
    }

    #[derive(Debug, Deserialize)]
    pub struct CustomRuntimeConfig {
        #[serde(default)]
        pub command: Vec<String>,
        pub port: u16,
    }

    #[derive(Debug, Deserialize)]
    pub struct Lifecycle {
        pub initializer: Option<Hook>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Hook {
        pub handler: String,
        pub timeout: u64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Trigger {
        pub trigger_name: String,
        pub trigger_type: String,
        pub source_arn: Option<String>,
        pub trigger_config: TriggerConfig,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TriggerConfig {
        pub auth_type: Option<String>,
        #[serde(default)]
        pub methods: Vec<String>,
        #[serde(default)]
        pub events: Vec<String>,
        pub filter: Option<Filter>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Filter {
        pub key: KeyFilter,
    }

    #[derive(Debug, Deserialize)]
    pub struct KeyFilter {
        pub prefix: String,
        pub suffix: String,
    }

    /// Parses an s.yaml of the checkout.
    pub fn load(name: &str) -> SYaml {
        let text = std::fs::read_to_string(repo().join(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid: {e}"))
    }

    /// Renders `${vars.x}` and `${env('NAME', 'default')}` (as its default), the two template
    /// forms whose values these tests need; anything else is left as it is.
    pub fn render(value: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            out += &rest[..start];
            let expr = &rest[start + 2..start + len];
            out += &evaluate(expr, vars).unwrap_or_else(|| rest[start..=start + len].to_string());
            rest = &rest[start + len + 1..];
        }
        out + rest
    }

    fn evaluate(expr: &str, vars: &BTreeMap<String, String>) -> Option<String> {
        if let Some(name) = expr.strip_prefix("vars.") {
            return vars.get(name).map(|v| render(v, vars));
        }
        let args = expr.strip_prefix("env(")?.strip_suffix(')')?;
        let (_, default) = args.split_once(',')?;
        Some(default.trim().trim_matches(['\'', '"']).to_string())
    }

    impl SYaml {
        /// The fc3 resources, each with its props.
        pub fn functions(&self) -> Vec<(&String, &Resource)> {
            self.resources
                .iter()
                .filter(|(_, r)| r.component == "fc3")
                .collect()
        }

        /// `value` with its template expressions rendered.
        pub fn render(&self, value: &str) -> String {
            render(value, &self.vars)
        }
    }

    impl Props {
        /// The first trigger of `kind`.
        pub fn trigger(&self, kind: &str) -> Option<&Trigger> {
            self.triggers.iter().find(|t| t.trigger_type == kind)
        }
    }
}

mod s_yaml_essentials {
    use super::syaml::{self, Props, SYaml};

    const CREATED_EVENTS: [&str; 3] = [
        "oss:ObjectCreated:PutObject",
        "oss:ObjectCreated:PostObject",
        "oss:ObjectCreated:CompleteMultipartUpload",
    ];

    fn main_function(doc: &SYaml) -> &Props {
        let functions = doc.functions();
        assert_eq!(functions.len(), 1, "s.yaml deploys exactly one function");
        &functions[0].1.props
    }

    #[test]
    fn s_yaml_is_edition_3_with_one_fc3_custom_runtime_function() {
        let doc = syaml::load("s.yaml");
        assert_eq!(doc.edition, "3.0.0");
        let props = main_function(&doc);
        assert!(
            ["custom.debian10", "custom.debian11", "custom.debian12"].contains(&&*props.runtime),
            "runtime {} is not a glibc >= 2.28 custom runtime",
            props.runtime
        );
        assert_eq!(
            props.code, "./dist",
            "code is the directory scripts/package.sh lays out"
        );
        assert!(!doc.render(&props.function_name).contains("${"));
        assert!(!doc.render(&props.region).is_empty());
    }

    #[test]
    fn runtime_starts_bootstrap_on_the_port_it_listens_on() {
        let doc = syaml::load("s.yaml");
        let props = main_function(&doc);
        assert_eq!(props.custom_runtime_config.command, ["/code/bootstrap"]);
        // bootstrap falls back to 9000 when FC_CUSTOM_LISTEN_PORT is unset (FC's default port).
        assert_eq!(props.custom_runtime_config.port, 9000);
    }

    #[test]
    fn http_trigger_is_anonymous_get_and_post() {
        let doc = syaml::load("s.yaml");
        let http = main_function(&doc)
            .trigger("http")
            .expect("an HTTP trigger");
        let config = &http.trigger_config;
        assert_eq!(config.auth_type.as_deref(), Some("anonymous"));
        let mut methods = config.methods.clone();
        methods.sort();
        assert_eq!(methods, ["GET", "POST"]);
    }

    #[test]
    fn oss_trigger_fires_on_created_objects_under_uploads_with_suffix_from_vars() {
        let doc = syaml::load("s.yaml");
        let oss = main_function(&doc).trigger("oss").expect("an OSS trigger");
        let mut events = oss.trigger_config.events.clone();
        events.sort();
        let mut expected = CREATED_EVENTS.to_vec();
        expected.sort();
        assert_eq!(events, expected);
        let key = &oss
            .trigger_config
            .filter
            .as_ref()
            .expect("a key filter")
            .key;
        assert_eq!(doc.render(&key.prefix), "uploads/");
        assert!(key.suffix.contains("${vars."), "suffix comes from vars");
        let arn = doc.render(oss.source_arn.as_deref().expect("sourceArn"));
        assert!(arn.starts_with("acs:oss:"), "{arn}");
        assert!(!oss.trigger_name.is_empty());
    }

    #[test]
    fn results_are_written_outside_the_trigger_prefix() {
        let doc = syaml::load("s.yaml");
        let props = main_function(&doc);
        let oss = props.trigger("oss").expect("an OSS trigger");
        let upload = doc.render(
            &oss.trigger_config
                .filter
                .as_ref()
                .expect("filter")
                .key
                .prefix,
        );
        let result = doc.render(
            props
                .environment_variables
                .get("RESULT_PREFIX")
                .expect("RESULT_PREFIX"),
        );
        assert!(!result.is_empty() && !upload.is_empty());
        assert!(
            !result.starts_with(&upload) && !upload.starts_with(&result),
            "results under {result} would re-trigger the function listening on {upload}"
        );
    }

    #[test]
    fn sizing_is_within_fc_limits_and_timeout_is_explicit() {
        let doc = syaml::load("s.yaml");
        let props = main_function(&doc);
        let steps = props.cpu / 0.05;
        assert!(
            (steps - steps.round()).abs() < 1e-9,
            "cpu {} not a multiple of 0.05",
            props.cpu
        );
        assert!((0.05..=16.0).contains(&props.cpu));
        assert_eq!(props.memory_size % 64, 0);
        assert!((128..=32768).contains(&props.memory_size));
        let gb_per_vcpu = props.memory_size as f64 / 1024.0 / props.cpu;
        assert!(
            (1.0..=4.0).contains(&gb_per_vcpu),
            "vCPU:GB must be 1:1..1:4, is 1:{gb_per_vcpu}"
        );
        let timeout = props.timeout.expect("timeout is set (fc3 default is 3 s)");
        assert!((10..=86_400).contains(&timeout), "timeout {timeout}");
        let concurrency = props.instance_concurrency.expect("instanceConcurrency");
        assert!((1..=200).contains(&concurrency));
    }

    #[test]
    fn initializer_warms_the_model_before_traffic() {
        let doc = syaml::load("s.yaml");
        let lifecycle = main_function(&doc)
            .instance_lifecycle_config
            .as_ref()
            .expect("instanceLifecycleConfig");
        let init = lifecycle.initializer.as_ref().expect("initializer");
        assert!(!init.handler.is_empty(), "FC needs a handler string");
        assert!(
            (1..=300).contains(&init.timeout),
            "Initializer limit is 300 s"
        );
    }

    #[test]
    fn environment_sets_result_prefix_and_log_level() {
        let doc = syaml::load("s.yaml");
        let env = &main_function(&doc).environment_variables;
        assert_eq!(doc.render(&env["RESULT_PREFIX"]), "results/");
        assert!(env.contains_key("RUST_LOG"));
        assert!(
            env.keys().all(|k| !k.starts_with("FC_")),
            "FC_* names are reserved by FC"
        );
    }

    #[test]
    fn function_runs_with_a_role_and_pre_deploy_builds_the_package() {
        let doc = syaml::load("s.yaml");
        let (_, resource) = doc.functions()[0];
        let role = doc.render(resource.props.role.as_deref().expect("role"));
        assert!(
            role.starts_with("acs:ram::") && role.contains(":role/"),
            "{role}"
        );
        let runs: Vec<&str> = resource.actions["pre-deploy"]
            .iter()
            .map(|a| a.run.as_str())
            .collect();
        assert!(
            runs.iter().any(|r| r.starts_with("scripts/package.sh")),
            "{runs:?}"
        );
    }

    #[test]
    fn fallback_splits_the_triggers_over_two_functions_sharing_one_package() {
        let doc = syaml::load("s.two-functions.yaml");
        let functions = doc.functions();
        assert_eq!(functions.len(), 2);
        let kinds: Vec<Vec<&str>> = functions
            .iter()
            .map(|(_, r)| {
                r.props
                    .triggers
                    .iter()
                    .map(|t| t.trigger_type.as_str())
                    .collect()
            })
            .collect();
        assert!(
            kinds.contains(&vec!["http"]) && kinds.contains(&vec!["oss"]),
            "{kinds:?}"
        );
        let single = syaml::load("s.yaml");
        let reference = main_function(&single);
        for (name, resource) in functions {
            let props = &resource.props;
            assert_eq!(props.code, reference.code, "{name} shares ./dist");
            assert_eq!(props.runtime, reference.runtime, "{name}");
            assert_eq!(props.custom_runtime_config.port, 9000, "{name}");
        }
        let names: Vec<String> = doc
            .functions()
            .iter()
            .map(|(_, r)| doc.render(&r.props.function_name))
            .collect();
        assert_ne!(names[0], names[1]);
    }

    #[test]
    fn renderer_used_by_these_tests_substitutes_vars_and_env_defaults() {
        let vars = [
            ("a".to_string(), "x-${env('NOPE', 'd')}".to_string()),
            ("b".to_string(), "y".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(syaml::render("${vars.a}/${vars.b}", &vars), "x-d/y");
        assert_eq!(
            syaml::render("${config('AccountID')}", &vars),
            "${config('AccountID')}"
        );
    }
}

/// Runs `tools/validate_s_yaml.py` (Python jsonschema + pyyaml) against the fc3 props schema in
/// ../shared/reference/fc3-schema.json. A fresh user checkout has no ../shared: then these tests
/// say so on stderr and return without checking anything.
mod schema_validation {
    use super::*;

    fn validator() -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tools/validate_s_yaml.py"));
        cmd
    }

    /// True when python3, its modules and the schema are all there.
    fn available() -> bool {
        match validator().arg("--locate").output() {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                eprintln!(
                    "SKIPPED fc3 schema validation: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("SKIPPED fc3 schema validation: cannot run python3: {e}");
                false
            }
        }
    }

    fn validate(file: &Path) -> Output {
        validator()
            .arg(file)
            .output()
            .expect("run validate_s_yaml.py")
    }

    #[test]
    fn s_yaml_files_validate_against_the_fc3_schema() {
        if !available() {
            return;
        }
        for name in ["s.yaml", "s.two-functions.yaml"] {
            let out = validate(&repo().join(name));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: {text}");
            assert!(text.contains("valid against"), "{text}");
        }
    }

    /// Each mutation breaks one rule of the schema; the validator must reject every one.
    #[test]
    fn schema_validation_rejects_broken_s_yaml() {
        if !available() {
            return;
        }
        let original = std::fs::read_to_string(repo().join("s.yaml")).expect("read s.yaml");
        let mutations = [
            ("memorySize: 2048", "memorySize: 2000", "multiple of 64"),
            (
                "runtime: custom.debian11",
                "runtime: custom.debian99",
                "is not one of",
            ),
            ("timeout: 60\n", "timeout: 0\n", "minimum of 1"),
            ("authType: anonymous", "authType: everyone", "is not one of"),
            (
                "- oss:ObjectCreated:PostObject",
                "- oss:ObjectCreated:Posted",
                "IOssTriggerConfig",
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        for (from, to, complaint) in mutations {
            assert!(
                original.contains(from),
                "s.yaml no longer contains `{from}`"
            );
            let broken = dir.path().join("s.yaml");
            std::fs::write(&broken, original.replacen(from, to, 1)).expect("write");
            let out = validate(&broken);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "`{to}` accepted: {text}");
            assert!(text.contains(complaint), "`{to}`: {text}");
        }
    }
}

mod bootstrap {
    use super::*;

    /// A stand-in for the server binary that records its pid and arguments, one per line.
    fn fake_package(dir: &Path) -> PathBuf {
        std::fs::copy(repo().join("bootstrap"), dir.join("bootstrap")).expect("copy bootstrap");
        let fake = dir.join("resnet18-fc");
        std::fs::write(
            &fake,
            "#!/bin/sh\n{ echo $$; for a in \"$@\"; do echo \"$a\"; done; } > \"$(dirname \"$0\")/args\"\n",
        )
        .expect("write fake binary");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir.join("args")
    }

    /// Runs bootstrap from another working directory with `env`; returns (bootstrap's pid,
    /// lines the fake server recorded).
    fn run(env: &[(&str, &str)]) -> (u32, Vec<String>, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let args_file = fake_package(dir.path());
        let mut cmd = Command::new(dir.path().join("bootstrap"));
        cmd.current_dir("/")
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Another test thread may fork while one of the just-written scripts is still open for
        // writing; an exec in that window fails with ETXTBSY ("Text file busy"), either here or
        // inside bootstrap. That race belongs to the test process, so retry a few times; a real
        // bootstrap failure fails every attempt.
        let mut attempts = 0;
        let (pid, status) = loop {
            attempts += 1;
            match cmd.spawn() {
                Ok(mut child) => {
                    let pid = child.id();
                    let status = child.wait().expect("wait");
                    if status.success() || attempts == 5 {
                        break (pid, status);
                    }
                }
                Err(e) if e.raw_os_error() == Some(26) && attempts < 5 => {}
                Err(e) => panic!("start bootstrap: {e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "bootstrap failed {attempts} times: {status}"
        );
        let text = std::fs::read_to_string(&args_file).expect("fake server ran");
        let root = dir.path().canonicalize().expect("canonical");
        (pid, text.lines().map(str::to_string).collect(), root, dir)
    }

    #[test]
    fn bootstrap_is_an_executable_shell_script() {
        let path = repo().join("bootstrap");
        let mode = std::fs::metadata(&path)
            .expect("bootstrap")
            .permissions()
            .mode();
        assert_eq!(mode & 0o755, 0o755, "mode {mode:o}");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn bootstrap_execs_the_server_on_all_interfaces_with_fc_port_offline() {
        let (pid, lines, root, _dir) = run(&[("FC_CUSTOM_LISTEN_PORT", "9123")]);
        assert_eq!(
            lines[0],
            pid.to_string(),
            "exec: the server keeps bootstrap's pid"
        );
        let model = root.join("model/resnet18.safetensors");
        assert_eq!(
            lines[1..],
            [
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                "9123",
                "--model",
                model.to_str().expect("utf-8 path"),
                "--offline"
            ]
        );
    }

    #[test]
    fn bootstrap_port_falls_back_to_fc_server_port_then_9000() {
        let (_, lines, _, _dir) = run(&[("FC_SERVER_PORT", "9456")]);
        assert_eq!(lines[4..6], ["--port", "9456"]);
        let (_, lines, _, _dir) = run(&[]);
        assert_eq!(lines[4..6], ["--port", "9000"]);
    }

    #[test]
    fn bootstrap_honours_a_model_override() {
        let (_, lines, _, _dir) = run(&[("RESNET18_FC_MODEL", "/code/model/f16.safetensors")]);
        assert_eq!(lines[6..8], ["--model", "/code/model/f16.safetensors"]);
    }
}

/// `scripts/package.sh` with a given binary (the one cargo built for these tests) and synthetic
/// weights. The full release build (cargo-zigbuild, glibc 2.28) is too slow for `cargo test`; it
/// runs in `.ci/run`, which then points `RESNET18_FC_DIST` at that package so the FC start test
/// below runs against the real release package too.
mod packaging {
    use super::*;

    /// Synthetic weights (same names and shapes as TorchVision's) written once per test.
    fn synthetic_weights(dir: &Path) -> PathBuf {
        let path = dir.join("synthetic.safetensors");
        resnet18_fc::synthetic::SyntheticWeights::generate()
            .write_safetensors(&path)
            .expect("write synthetic weights");
        path
    }

    pub fn package(out: &Path, extra: &[&str]) -> Output {
        let weights = synthetic_weights(out.parent().expect("parent"));
        Command::new(repo().join("scripts/package.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_resnet18-fc"))
            .arg("--weights")
            .arg(&weights)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .expect("run scripts/package.sh")
    }

    /// Shared libraries the binary needs, from its ELF dynamic section.
    pub fn needed_libraries(binary: &Path) -> Vec<String> {
        let out = Command::new("objdump")
            .arg("-p")
            .arg(binary)
            .output()
            .expect("objdump (binutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("NEEDED"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    #[test]
    fn package_lays_out_bootstrap_binary_and_weights() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dist = dir.path().join("dist");
        let out = package(&dist, &["--max-glibc", "99.0"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        for (file, mode) in [("bootstrap", 0o755), ("resnet18-fc", 0o755)] {
            let meta = std::fs::metadata(dist.join(file)).expect(file);
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let weights = std::fs::read(dist.join("model/resnet18.safetensors")).expect("weights");
        let source = std::fs::read(dir.path().join("synthetic.safetensors")).expect("source");
        assert!(weights == source, "weights copied byte for byte");
        assert!(log.contains("package size: "), "size is reported: {log}");
        let libs = needed_libraries(&dist.join("resnet18-fc"));
        assert!(
            libs.iter()
                .all(|l| !l.starts_with("libssl") && !l.starts_with("libcrypto"))
        );
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    }

    /// `--f16` converts a TorchVision checkpoint (here the converter's tiny fixture, every key of
    /// `resnet18().state_dict()` as stride-0 f32 tensors) into float16 safetensors.
    #[test]
    fn package_f16_variant_stores_every_tensor_as_float16() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dist = dir.path().join("dist");
        let checkpoint = repo().join("tests/fixtures/checkpoints/resnet18_tiny.pth");
        let out = Command::new(repo().join("scripts/package.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_resnet18-fc"))
            .arg("--weights")
            .arg(&checkpoint)
            .args(["--f16", "--max-glibc", "99.0", "--out"])
            .arg(&dist)
            .output()
            .expect("run package.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(dist.join("model/resnet18.safetensors")).expect("weights");
        let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let floats: Vec<_> = tensors
            .tensors()
            .into_iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .collect();
        assert_eq!(floats.len(), 102, "every float tensor of ResNet-18");
        for (name, view) in floats {
            assert_eq!(view.dtype(), safetensors::Dtype::F16, "{name}");
        }
    }

    #[test]
    fn package_f16_refuses_safetensors_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = package(&dir.path().join("dist"), &["--f16", "--max-glibc", "99.0"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("pass the .pth file"), "{log}");
    }

    #[test]
    fn package_refuses_a_binary_needing_a_newer_glibc_than_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dist = dir.path().join("dist");
        // Every dynamically linked x86_64 glibc binary needs at least GLIBC_2.2.5.
        let out = package(&dist, &["--max-glibc", "2.2"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("newer than 2.2"), "{log}");
        assert!(!dist.join("bootstrap").exists(), "nothing packaged");
    }

    #[test]
    fn package_refuses_to_wipe_a_directory_it_did_not_make() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dist = dir.path().join("precious");
        std::fs::create_dir(&dist).expect("mkdir");
        std::fs::write(dist.join("notes.txt"), "keep me").expect("write");
        let out = package(&dist, &["--max-glibc", "99.0"]);
        assert!(!out.status.success());
        assert!(dist.join("notes.txt").exists());
    }

    #[test]
    fn package_without_weights_or_network_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake_repo = dir.path().join("checkout");
        std::fs::create_dir_all(fake_repo.join("scripts")).expect("mkdir");
        std::fs::copy(
            repo().join("scripts/package.sh"),
            fake_repo.join("scripts/package.sh"),
        )
        .expect("copy script");
        std::fs::copy(repo().join("bootstrap"), fake_repo.join("bootstrap")).expect("copy");
        let out = Command::new(fake_repo.join("scripts/package.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_resnet18-fc"))
            .args(["--max-glibc", "99.0"])
            // An unreachable download: no weights in this checkout, none can be fetched.
            .env("RESNET18_FC_MODEL_URL", "http://127.0.0.1:9/resnet18.pth")
            .output()
            .expect("run package.sh");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("could not download the weights"), "{log}");
        assert!(log.contains("--weights resnet18-f37072fd.pth"), "{log}");
    }
}

/// Starts `dist/bootstrap` the way FC does and talks to it like FC: `/initialize`, an HTTP
/// trigger call (`/http-invoke`) and an event invocation (`/invoke`).
mod fc_start {
    use super::*;
    use base64::Engine;

    /// Stops the server when dropped, even when an assertion failed.
    struct Server {
        child: Child,
        port: u16,
        stdout: PathBuf,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    /// `dist/bootstrap` with the working directory `dist`, FC's environment variables, and every
    /// proxy variable pointing at a closed port so that any download attempt fails.
    fn start(dist: &Path, logs: &Path) -> Server {
        let port = free_port();
        let stdout = logs.join("stdout.log");
        let child = Command::new(dist.join("bootstrap"))
            .current_dir(dist)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("FC_CUSTOM_LISTEN_PORT", port.to_string())
            .env("FC_FUNC_CODE_PATH", dist)
            .env("FC_FUNCTION_NAME", "resnet18-fc")
            .env("FC_REGION", "cn-hangzhou")
            .envs(
                [
                    "http_proxy",
                    "https_proxy",
                    "HTTP_PROXY",
                    "HTTPS_PROXY",
                    "ALL_PROXY",
                ]
                .map(|k| (k, "http://127.0.0.1:9")),
            )
            .stdout(std::fs::File::create(&stdout).expect("log file"))
            .stderr(std::fs::File::create(logs.join("stderr.log")).expect("log file"))
            .spawn()
            .expect("start dist/bootstrap");
        let mut server = Server {
            child,
            port,
            stdout,
        };
        wait_until_listening(&mut server, logs);
        server
    }

    /// Waits (at most FC's 120 s startup deadline) for the port to accept connections; fails
    /// at once, with the server's stderr, when the process exits instead.
    fn wait_until_listening(server: &mut Server, logs: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let stderr = std::fs::read_to_string(logs.join("stderr.log")).unwrap_or_default();
                panic!("dist/bootstrap exited ({status}) before listening:\n{stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "not listening on {}",
                server.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A response: status, lower-cased headers, body.
    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
            })
        }
    }

    /// One HTTP/1.1 request on a fresh connection, as FC's Go client sends it.
    fn request(port: u16, head: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let mut text = format!("{head} HTTP/1.1\r\nHost: 21.0.5.7:{port}\r\n");
        text += "User-Agent: Go-http-client/1.1\r\nConnection: close\r\n";
        text += &format!("Content-Length: {}\r\n", body.len());
        for (k, v) in headers {
            text += &format!("{k}: {v}\r\n");
        }
        stream.write_all(text.as_bytes()).expect("send head");
        stream.write_all(b"\r\n").expect("send");
        stream.write_all(body).expect("send body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read response");
        parse_response(&raw)
    }

    fn parse_response(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("complete head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("hex chunk size");
            if size == 0 {
                return out;
            }
            let start = line_end + 2;
            out.extend_from_slice(&data[start..start + size]);
            data = &data[start + size + 2..];
        }
    }

    /// A small PNG (a colour gradient) made here, so no test image file is needed.
    fn png() -> Vec<u8> {
        let img = image::RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
        });
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png)
            .expect("encode PNG");
        bytes.into_inner()
    }

    /// Top-k predictions of a classify answer, checked for shape: ranks 1..=k, valid ImageNet
    /// indices with their TorchVision labels, scores in (0, 1] and not increasing.
    fn predictions(answer: &serde_json::Value, k: usize) -> Vec<u64> {
        assert_eq!(answer["model"], "resnet18", "{answer}");
        let list = answer["predictions"].as_array().expect("predictions");
        assert_eq!(list.len(), k, "{answer}");
        let mut previous = f64::INFINITY;
        for (i, p) in list.iter().enumerate() {
            assert_eq!(p["rank"].as_u64(), Some(i as u64 + 1));
            let index = p["index"].as_u64().expect("index");
            let label = resnet18_fc::labels::label(index as usize).expect("index < 1000");
            assert_eq!(p["label"], label);
            let score = p["score"].as_f64().expect("score");
            assert!(score > 0.0 && score <= 1.0 && score <= previous, "{answer}");
            previous = score;
        }
        list.iter().filter_map(|p| p["index"].as_u64()).collect()
    }

    fn fc_headers<'a>(control_path: &'a str, request_id: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("x-fc-control-path", control_path),
            ("x-fc-request-id", request_id),
            ("x-fc-function-name", "resnet18-fc"),
            ("x-fc-region", "cn-hangzhou"),
            ("x-fc-access-key-id", ""),
            ("x-fc-access-key-secret", ""),
            ("x-fc-security-token", ""),
        ]
    }

    /// The package to start: `$RESNET18_FC_DIST` (the release package `.ci/run` builds) when
    /// set, else one packaged here from the test binary and synthetic weights.
    fn dist(work: &Path) -> PathBuf {
        if let Some(dist) = std::env::var_os("RESNET18_FC_DIST") {
            eprintln!("testing the package in {}", Path::new(&dist).display());
            return PathBuf::from(dist);
        }
        let dist = work.join("dist");
        let out = super::packaging::package(&dist, &["--max-glibc", "99.0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dist
    }

    #[test]
    fn packaged_bootstrap_initializes_and_classifies_like_fc() {
        let work = tempfile::tempdir().expect("tempdir");
        let dist = dist(work.path());
        let server = start(&dist, work.path());
        let port = server.port;

        let init = request(
            port,
            "POST /initialize",
            &fc_headers("/initialize", "req-init-1"),
            b"",
        );
        assert!(
            (200..300).contains(&init.status),
            "initialize: {}",
            init.status
        );

        let image = png();
        let mut headers = fc_headers("/http-invoke", "req-http-1");
        headers.push(("content-type", "image/png"));
        let http = request(port, "POST /classify?top_k=5", &headers, &image);
        assert_eq!(http.status, 200, "{}", String::from_utf8_lossy(&http.body));
        let http_top = predictions(&http.json(), 5);

        let event = serde_json::json!({
            "image": base64::engine::general_purpose::STANDARD.encode(&image),
            "top_k": 2,
        });
        let mut headers = fc_headers("/invoke", "req-invoke-1");
        headers.push(("content-type", "application/octet-stream"));
        let invoke = request(port, "POST /invoke", &headers, event.to_string().as_bytes());
        assert_eq!(
            invoke.status,
            200,
            "{}",
            String::from_utf8_lossy(&invoke.body)
        );
        assert_ne!(invoke.header("x-fc-status"), Some("404"));
        let invoke_top = predictions(&invoke.json(), 2);
        assert_eq!(
            invoke_top,
            http_top[..2],
            "same image, same answer on both paths"
        );

        let log = std::fs::read_to_string(&server.stdout).expect("stdout log");
        for id in ["req-http-1", "req-invoke-1"] {
            assert!(
                log.contains(&format!("FC Invoke Start RequestId: {id}")),
                "{log}"
            );
            assert!(
                log.contains(&format!("FC Invoke End RequestId: {id}")),
                "{log}"
            );
        }
        assert!(
            log.contains("FC Initialize Start RequestId: req-init-1"),
            "{log}"
        );
    }
}

/// The README as a new user reads it: every file of this repository it names must exist.
mod readme {
    use super::repo;

    /// Directories whose files the README names; `model/` is left out (its weights are made by
    /// the commands the README shows, not shipped).
    const PREFIXES: [&str; 8] = [
        "src/",
        "tests/",
        "tools/",
        "scripts/",
        ".ci/",
        "examples/",
        "benches/",
        "fuzz/",
    ];

    /// Repository paths mentioned in `text`: words starting with one of [`PREFIXES`], without
    /// wildcards or placeholders, trailing punctuation removed.
    fn mentioned_paths(text: &str) -> Vec<String> {
        let separators = |c: char| c.is_whitespace() || "`'\"()[]|,;=".contains(c);
        let mut paths: Vec<String> = text
            .split(separators)
            .map(|w| w.trim_end_matches(['.', ':', '…']))
            .filter(|w| PREFIXES.iter().any(|p| w.starts_with(p)))
            .filter(|w| !w.contains(['*', '<', '>', '{', '$', '…']))
            .map(str::to_owned)
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    #[test]
    fn path_extraction_keeps_real_paths_and_skips_patterns() {
        let text = "run `bash .ci/run`, see (tests/fixtures/golden/chelsea.jpg). \
                    Globs src/cli_*.rs and <file> and tools/x/{a,b} are skipped; cp src/a.rs:";
        assert_eq!(
            mentioned_paths(text),
            [".ci/run", "src/a.rs", "tests/fixtures/golden/chelsea.jpg"]
        );
    }

    #[test]
    fn every_repository_path_in_the_readme_exists() {
        let root = repo();
        let text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let paths = mentioned_paths(&text);
        assert!(
            paths.len() >= 10,
            "too few paths found, extraction broken? {paths:?}"
        );
        let missing: Vec<&String> = paths.iter().filter(|p| !root.join(p).exists()).collect();
        assert!(
            missing.is_empty(),
            "README names missing files: {missing:?}"
        );
    }
}
