//! Deployment artefacts: `s.yaml` (and its two-function fallback), `bootstrap`,
//! `scripts/package.sh`, `deploy/ram/`, the offline `s deploy` sequence, and the package started
//! exactly as Function Compute starts it.
//!
//! FC facts used here (docs/deploy.md has them with their sources): vCPU 0.05–16 in steps of
//! 0.05, memory 128–32768 MB in steps of 64, vCPU:GB between 1:1 and 1:4, timeout 1–86 400 s (fc3
//! default 3 s), instanceConcurrency 1–200, Initializer ≤ 300 s, server on
//! `0.0.0.0:$FC_CUSTOM_LISTEN_PORT`, at most 10 native OSS triggers per bucket, one prefix and one
//! suffix each, never overlapping.

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
        pub path: Option<String>,
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
        pub internet_access: Option<bool>,
        pub custom_runtime_config: CustomRuntimeConfig,
        pub instance_lifecycle_config: Option<Lifecycle>,
        #[serde(default)]
        pub environment_variables: BTreeMap<String, String>,
        pub role: Option<String>,
        pub log_config: Option<String>,
        pub custom_domain: Option<CustomDomain>,
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
    pub struct CustomDomain {
        pub domain_name: String,
        pub protocol: String,
        pub route: Route,
    }

    #[derive(Debug, Deserialize)]
    pub struct Route {
        pub path: String,
        pub qualifier: Option<String>,
        #[serde(default)]
        pub methods: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Trigger {
        pub trigger_name: String,
        pub trigger_type: String,
        pub source_arn: Option<String>,
        pub invocation_role: Option<String>,
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
        parse(&text, name)
    }

    /// Parses s.yaml text.
    pub fn parse(text: &str, name: &str) -> SYaml {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{name} is not valid: {e}"))
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

    /// Whether an action key (`pre-deploy`, or `pre-${regex('deploy|local')}` as Serverless
    /// Devs 3 allows) runs before `command`. The regex form is read as `|`-separated names,
    /// which is all this project uses.
    pub fn runs_before(key: &str, command: &str) -> bool {
        let Some(rest) = key.strip_prefix("pre-") else {
            return false;
        };
        match rest
            .strip_prefix("${regex(")
            .and_then(|r| r.strip_suffix(")}"))
        {
            Some(pattern) => pattern
                .trim_matches(['\'', '"'])
                .split('|')
                .any(|name| name == command),
            None => rest == command,
        }
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

    impl Resource {
        /// The actions that run before `command` (`deploy`, `local`).
        pub fn actions_before(&self, command: &str) -> Vec<&Action> {
            self.actions
                .iter()
                .filter(|(key, _)| runs_before(key, command))
                .flat_map(|(_, actions)| actions)
                .collect()
        }
    }

    impl Props {
        /// The first trigger of `kind`.
        pub fn trigger(&self, kind: &str) -> Option<&Trigger> {
            self.triggers.iter().find(|t| t.trigger_type == kind)
        }

        /// Every trigger of `kind`.
        pub fn triggers_of(&self, kind: &str) -> Vec<&Trigger> {
            self.triggers
                .iter()
                .filter(|t| t.trigger_type == kind)
                .collect()
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
    fn http_trigger_is_anonymous_get_post_and_options_for_cors_preflights() {
        let doc = syaml::load("s.yaml");
        let http = main_function(&doc)
            .trigger("http")
            .expect("an HTTP trigger");
        let config = &http.trigger_config;
        assert_eq!(config.auth_type.as_deref(), Some("anonymous"));
        let mut methods = config.methods.clone();
        methods.sort();
        assert_eq!(methods, ["GET", "OPTIONS", "POST"]);
    }

    /// Point 1: the default HTTP-trigger domains add `Content-Disposition: attachment`, so the
    /// web page needs a custom domain: `auto` by default, the user's own from `vars`.
    #[test]
    fn web_page_gets_a_custom_domain_auto_by_default_settable_in_vars() {
        let doc = syaml::load("s.yaml");
        let domain = main_function(&doc)
            .custom_domain
            .as_ref()
            .expect("customDomain");
        assert!(
            domain.domain_name.contains("${vars."),
            "the domain comes from vars: {}",
            domain.domain_name
        );
        assert_eq!(doc.render(&domain.domain_name), "auto");
        let own = syaml::render(
            &domain.domain_name,
            &[("domainName".to_string(), "ai.example.com".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(own, "ai.example.com");
        assert!(
            ["HTTP", "HTTPS", "HTTP,HTTPS"].contains(&domain.protocol.as_str()),
            "{}",
            domain.protocol
        );
        assert_eq!(domain.route.path, "/*", "every path, the page and the API");
        assert_eq!(domain.route.qualifier.as_deref(), Some("LATEST"));
        assert!(domain.route.methods.is_empty(), "every method");
    }

    /// Point 2: every upload format the server decodes from phones and browsers, in both cases,
    /// within the 10 native triggers a bucket allows and without overlapping filters.
    #[test]
    fn oss_triggers_cover_jpeg_png_webp_in_both_cases_without_overlap() {
        let doc = syaml::load("s.yaml");
        let props = main_function(&doc);
        let triggers = props.triggers_of("oss");
        assert!(
            (1..=10).contains(&triggers.len()),
            "{} native OSS triggers",
            triggers.len()
        );
        let mut suffixes = Vec::new();
        let mut expected_events = CREATED_EVENTS.to_vec();
        expected_events.sort();
        for trigger in &triggers {
            let mut events = trigger.trigger_config.events.clone();
            events.sort();
            assert_eq!(events, expected_events, "{}", trigger.trigger_name);
            let key = &trigger
                .trigger_config
                .filter
                .as_ref()
                .expect("a key filter")
                .key;
            assert_eq!(
                doc.render(&key.prefix),
                "uploads/",
                "{}",
                trigger.trigger_name
            );
            let arn = doc.render(trigger.source_arn.as_deref().expect("sourceArn"));
            assert!(
                arn.starts_with("acs:oss:") && arn.ends_with(":my-images-bucket"),
                "{arn}"
            );
            suffixes.push(doc.render(&key.suffix));
        }
        for ext in ["jpg", "jpeg", "png", "webp"] {
            for suffix in [format!(".{ext}"), format!(".{}", ext.to_uppercase())] {
                assert!(
                    suffixes.contains(&suffix),
                    "{suffix} missing from {suffixes:?}"
                );
            }
        }
        for (i, a) in suffixes.iter().enumerate() {
            assert!(
                !a.is_empty(),
                "an empty suffix matches every key, results too"
            );
            for b in &suffixes[i + 1..] {
                assert!(
                    !a.ends_with(b.as_str()) && !b.ends_with(a.as_str()),
                    "suffixes {a} and {b} overlap"
                );
            }
        }
        let mut names: Vec<&str> = triggers.iter().map(|t| t.trigger_name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), triggers.len(), "trigger names are unique");
    }

    /// Point 3: no trigger names a role that may not exist; fc3 creates the OSS trigger role.
    #[test]
    fn oss_triggers_leave_the_invocation_role_to_fc3() {
        for file in ["s.yaml", "s.two-functions.yaml"] {
            let doc = syaml::load(file);
            for (_, resource) in doc.functions() {
                for trigger in resource.props.triggers_of("oss") {
                    assert_eq!(
                        trigger.invocation_role, None,
                        "{file}: {} names a role",
                        trigger.trigger_name
                    );
                }
            }
        }
    }

    /// Point 4: the network setting that surely reaches the internal OSS endpoint.
    #[test]
    fn internet_access_stays_on() {
        for file in ["s.yaml", "s.two-functions.yaml"] {
            let doc = syaml::load(file);
            for (name, resource) in doc.functions() {
                assert_eq!(resource.props.internet_access, Some(true), "{file}: {name}");
            }
        }
    }

    /// Point 6: logs are on (fc3 creates the SLS project and logstore).
    #[test]
    fn logs_are_on() {
        for file in ["s.yaml", "s.two-functions.yaml"] {
            let doc = syaml::load(file);
            for (name, resource) in doc.functions() {
                assert_eq!(
                    resource.props.log_config.as_deref(),
                    Some("auto"),
                    "{file}: {name}"
                );
            }
        }
    }

    #[test]
    fn results_are_written_outside_the_trigger_prefix() {
        let doc = syaml::load("s.yaml");
        let props = main_function(&doc);
        let result = doc.render(
            props
                .environment_variables
                .get("RESULT_PREFIX")
                .expect("RESULT_PREFIX"),
        );
        for oss in props.triggers_of("oss") {
            let key = &oss.trigger_config.filter.as_ref().expect("filter").key;
            let upload = doc.render(&key.prefix);
            assert!(!result.is_empty() && !upload.is_empty());
            assert!(
                !result.starts_with(&upload) && !upload.starts_with(&result),
                "results under {result} would re-trigger the function listening on {upload}"
            );
        }
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
        let cors = env
            .get(resnet18_fc::config::CORS_ORIGINS_VAR)
            .expect("CORS origins are passed to the function");
        assert!(cors.contains("${vars."), "settable in vars: {cors}");
        assert_eq!(doc.render(cors), "", "CORS off by default");
        let precision = env
            .get("RESNET18_FC_PRECISION")
            .expect("the precision is passed to the function");
        assert!(
            precision.contains("${vars."),
            "settable in vars: {precision}"
        );
        assert_eq!(doc.render(precision), "f32", "f32 (exact) by default");
        assert!(
            env.keys().all(|k| !k.starts_with("FC_")),
            "FC_* names are reserved by FC"
        );
    }

    #[test]
    fn function_runs_with_a_role_and_the_package_is_built_before_deploy_and_local() {
        let doc = syaml::load("s.yaml");
        let (_, resource) = doc.functions()[0];
        let role = doc.render(resource.props.role.as_deref().expect("role"));
        assert!(
            role.starts_with("acs:ram::") && role.contains(":role/"),
            "{role}"
        );
        for command in ["deploy", "local"] {
            let runs: Vec<&str> = resource
                .actions_before(command)
                .iter()
                .map(|a| a.run.as_str())
                .collect();
            assert!(
                runs.iter().any(|r| r.starts_with("scripts/package.sh")),
                "before `s {command}`: {runs:?}"
            );
        }
        assert!(resource.actions_before("remove").is_empty());
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
        assert!(kinds.contains(&vec!["http"]), "{kinds:?}");
        assert!(
            kinds
                .iter()
                .any(|k| !k.is_empty() && k.iter().all(|t| *t == "oss")),
            "{kinds:?}"
        );
        let single = syaml::load("s.yaml");
        let reference = main_function(&single);
        for (name, resource) in functions {
            let props = &resource.props;
            let serves_http = props.trigger("http").is_some();
            assert_eq!(
                props.custom_domain.is_some(),
                serves_http,
                "{name}: the page's domain"
            );
            if !serves_http {
                let suffixes = |p: &Props| -> Vec<String> {
                    p.triggers_of("oss")
                        .iter()
                        .map(|t| {
                            t.trigger_config
                                .filter
                                .as_ref()
                                .expect("filter")
                                .key
                                .suffix
                                .clone()
                        })
                        .collect()
                };
                assert_eq!(suffixes(props), suffixes(reference), "{name}: same uploads");
            }
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
        assert!(syaml::runs_before("pre-deploy", "deploy"));
        assert!(syaml::runs_before("pre-${regex('deploy|local')}", "local"));
        assert!(!syaml::runs_before(
            "pre-${regex('deploy|local')}",
            "remove"
        ));
        assert!(!syaml::runs_before("success-deploy", "deploy"));
    }
}

/// `tools/validate_s_yaml.py` against the in-repo description of the props this project uses
/// (`tools/s_yaml_props.json`). It needs python3 and PyYAML; without them these tests fail and
/// say what to install.
mod schema_validation {
    use super::*;

    fn validate(files: &[&Path]) -> Output {
        let output = Command::new("python3")
            .arg(repo().join("tools/validate_s_yaml.py"))
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3"));
        assert_ne!(
            output.status.code(),
            Some(2),
            "tools/validate_s_yaml.py cannot run (install PyYAML: `apt install python3-yaml` \
             or `pip install pyyaml`): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    #[test]
    fn s_yaml_files_are_valid() {
        let files = [repo().join("s.yaml"), repo().join("s.two-functions.yaml")];
        let out = validate(&[&files[0], &files[1]]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert_eq!(text.matches(": valid (").count(), 2, "{text}");
    }

    /// Each mutation breaks one rule; the validator must reject every one, naming the key.
    #[test]
    fn validator_rejects_unknown_keys_wrong_types_and_bad_values() {
        let original = std::fs::read_to_string(repo().join("s.yaml")).expect("read s.yaml");
        let mutations = [
            // A typo: fc3's schema lets it through and FC keeps its 3 s default.
            (
                "      timeout: 60\n",
                "      timout: 60\n",
                "timout: unknown key (did you mean 'timeout'?)",
            ),
            (
                "memorySize: 2048",
                "memorySize: \"2048\"",
                "memorySize: '2048' is not of type integer",
            ),
            (
                "memorySize: 2048",
                "memorySize: 2000",
                "not a multiple of 64",
            ),
            ("cpu: 2\n", "cpu: two\n", "cpu: 'two' is not of type number"),
            (
                "internetAccess: true",
                "internetAccess: yes please",
                "internetAccess",
            ),
            (
                "runtime: custom.debian11",
                "runtime: custom.debian99",
                "is not one of",
            ),
            ("authType: anonymous", "authType: everyone", "is not one of"),
            (
                "- oss:ObjectCreated:PostObject",
                "- oss:ObjectCreated:Posted",
                "Posted' is not one of",
            ),
            (
                "        protocol: HTTP\n",
                "        protocol: FTP\n",
                "customDomain.protocol",
            ),
            (
                "        domainName: ${vars.domainName}\n",
                "        domain: ${vars.domainName}\n",
                "customDomain.domain: unknown key",
            ),
            (
                "            disableURLInternet: false\n",
                "            disableUrlInternet: false\n",
                "disableUrlInternet: unknown key",
            ),
            (
                "                suffix: .png\n",
                "                sufix: .png\n",
                "sufix: unknown key",
            ),
            ("      logConfig: auto", "      logConfig: on", "logConfig"),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        for (from, to, complaint) in mutations {
            assert!(
                original.contains(from),
                "s.yaml no longer contains `{from}`"
            );
            let broken = dir.path().join("s.yaml");
            std::fs::write(&broken, original.replacen(from, to, 1)).expect("write");
            let out = validate(&[&broken]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(1),
                "`{}` accepted: {text}",
                to.trim()
            );
            assert!(text.contains(complaint), "`{}`: {text}", to.trim());
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

/// `scripts/package.sh` in a temporary copy of the checkout (it keeps weights and the chosen
/// precision in the checkout's `model/`), with the binary cargo built for these tests and
/// synthetic weights. The full release build (cargo-zigbuild, glibc 2.28) is too slow for
/// `cargo test`; it runs in `.ci/run`, which then points `RESNET18_FC_DIST` at that package so
/// the FC start test below runs against the real release package too.
mod packaging {
    use super::*;

    /// A checkout copy with what packaging and deploying read: the script, bootstrap, s.yaml.
    pub fn checkout(dir: &Path) -> PathBuf {
        let root = dir.join("checkout");
        std::fs::create_dir_all(root.join("scripts")).expect("mkdir");
        for file in ["scripts/package.sh", "bootstrap", "s.yaml"] {
            std::fs::copy(repo().join(file), root.join(file)).expect("copy checkout file");
        }
        root
    }

    /// `scripts/package.sh` of `root` with the test binary (glibc check relaxed: it is a host
    /// build) and every download pointed at a closed port, so any download attempt fails.
    pub fn script(root: &Path) -> Command {
        let mut cmd = Command::new(root.join("scripts/package.sh"));
        cmd.envs(script_env());
        cmd
    }

    /// The environment of [`script`].
    fn script_env() -> [(&'static str, &'static str); 3] {
        [
            ("RESNET18_FC_BINARY", env!("CARGO_BIN_EXE_resnet18-fc")),
            ("RESNET18_FC_MAX_GLIBC", "99.0"),
            ("RESNET18_FC_MODEL_URL", "http://127.0.0.1:9/resnet18.pth"),
        ]
    }

    /// Synthetic weights (same names and shapes as TorchVision's) written once per test.
    fn synthetic_weights(dir: &Path) -> PathBuf {
        let path = dir.join("synthetic.safetensors");
        resnet18_fc::synthetic::SyntheticWeights::generate()
            .write_safetensors(&path)
            .expect("write synthetic weights");
        path
    }

    /// Packages synthetic weights into `out` from a fresh checkout copy beside it.
    pub fn package(out: &Path, extra: &[&str]) -> Output {
        let dir = out.parent().expect("parent");
        let weights = synthetic_weights(dir);
        script(&checkout(dir))
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

    fn float_dtypes(weights: &Path) -> Vec<safetensors::Dtype> {
        let bytes = std::fs::read(weights).expect("weights");
        let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let mut dtypes: Vec<_> = tensors
            .tensors()
            .into_iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .map(|(_, view)| view.dtype())
            .collect();
        assert_eq!(dtypes.len(), 102, "every float tensor of ResNet-18");
        dtypes.dedup();
        dtypes
    }

    #[test]
    fn package_lays_out_bootstrap_binary_and_weights() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dist = dir.path().join("dist");
        let out = package(&dist, &[]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        for (file, mode) in [("bootstrap", 0o755), ("resnet18-fc", 0o755)] {
            let meta = std::fs::metadata(dist.join(file)).expect(file);
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let weights = std::fs::read(dist.join("model/resnet18.safetensors")).expect("weights");
        let source = std::fs::read(dir.path().join("synthetic.safetensors")).expect("source");
        assert!(weights == source, "weights copied byte for byte");
        let total: u64 = ["bootstrap", "resnet18-fc", "model/resnet18.safetensors"]
            .iter()
            .map(|f| std::fs::metadata(dist.join(f)).expect(f).len())
            .sum();
        assert!(
            log.contains(&format!("package size: {total} bytes")),
            "size of the three files is reported: {log}"
        );
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
        let root = checkout(dir.path());
        let out = script(&root)
            .arg("--weights")
            .arg(repo().join("tests/fixtures/checkpoints/resnet18_tiny.pth"))
            .arg("--f16")
            .output()
            .expect("run package.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let packaged = root.join("dist/model/resnet18.safetensors");
        assert_eq!(float_dtypes(&packaged), [safetensors::Dtype::F16]);
    }

    #[test]
    fn package_f16_refuses_safetensors_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = package(&dir.path().join("dist"), &["--f16"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("pass the .pth file"), "{log}");
    }

    /// Point 5, the README's offline path then `s deploy`: `package.sh --weights X.pth --f16`,
    /// then the pre-deploy action exactly as s.yaml declares it (no arguments). The second run
    /// must package the same f16 weights, from model/, without trying to download anything.
    #[test]
    fn offline_weights_and_f16_survive_the_pre_deploy_action() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = checkout(dir.path());
        let checkpoint = repo().join("tests/fixtures/checkpoints/resnet18_tiny.pth");
        let first = script(&root)
            .arg("--weights")
            .arg(&checkpoint)
            .arg("--f16")
            .output()
            .expect("run package.sh");
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let kept = root.join("model/resnet18-f16.safetensors");
        let converted = std::fs::read(&kept).expect("converted weights stay in model/");
        std::fs::remove_dir_all(root.join("dist")).expect("forget the first dist/");

        let doc = syaml::parse(
            &std::fs::read_to_string(root.join("s.yaml")).expect("s.yaml"),
            "s.yaml",
        );
        let (_, resource) = doc.functions()[0];
        let actions = resource.actions_before("deploy");
        assert!(!actions.is_empty(), "s.yaml builds before deploying");
        for action in actions {
            let cwd = root.join(action.path.as_deref().unwrap_or("./"));
            // Serverless Devs runs `run` through a shell in `path`, with no arguments of its own.
            let out = Command::new("sh")
                .arg("-c")
                .arg(&action.run)
                .current_dir(&cwd)
                .envs(script_env())
                .output()
                .expect("run the pre-deploy action");
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "`{}` failed: {log}", action.run);
            assert!(!log.contains("fetch-model"), "no download attempted: {log}");
            assert!(log.contains("precision f16"), "{log}");
        }
        let packaged = root.join("dist/model/resnet18.safetensors");
        assert!(
            std::fs::read(&packaged).expect("packaged weights") == converted,
            "the deploy packages the weights converted by the first run"
        );
        assert_eq!(float_dtypes(&packaged), [safetensors::Dtype::F16]);

        // `--f32` switches back and is kept as well (here: no f32 weights, so it must try
        // the closed-port download and fail saying so).
        let out = script(&root).arg("--f32").output().expect("run package.sh");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("could not download the weights"), "{log}");
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
        let out = package(&dist, &[]);
        assert!(!out.status.success());
        assert!(dist.join("notes.txt").exists());
    }

    #[test]
    fn package_without_weights_or_network_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = script(&checkout(dir.path()))
            .output()
            .expect("run package.sh");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains("could not download the weights"), "{log}");
        assert!(log.contains("--weights resnet18-f37072fd.pth"), "{log}");
    }

    /// Point 9: the script says it needs Linux x86_64 instead of failing half-way elsewhere.
    #[test]
    fn package_outside_linux_x86_64_says_it_needs_linux() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = checkout(dir.path());
        let bin = dir.path().join("fake-bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let uname = bin.join("uname");
        std::fs::write(
            &uname,
            "#!/bin/sh\ncase \"$1\" in -s) echo Darwin ;; -m) echo arm64 ;; esac\n",
        )
        .expect("write fake uname");
        std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = script(&root)
            .env("PATH", path)
            .output()
            .expect("run package.sh");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(
            log.contains("Linux x86_64 only (here: Darwin arm64)"),
            "{log}"
        );
        assert!(!root.join("dist").exists(), "nothing built");
    }
}

/// The function role of `deploy/ram/`: trusted by Function Compute, allowed exactly GetObject
/// on uploads and PutObject on results.
mod ram_policy {
    use super::*;

    fn json(file: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
    }

    fn strings(value: &serde_json::Value) -> Vec<String> {
        match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
            other => panic!("expected a string or a list of strings, got {other}"),
        }
    }

    #[test]
    fn function_role_policy_allows_exactly_get_uploads_and_put_results() {
        let policy = json("deploy/ram/function-role-policy.json");
        assert_eq!(policy["Version"], "1");
        let mut grants: Vec<(String, String, String)> = Vec::new();
        for statement in policy["Statement"].as_array().expect("Statement list") {
            let effect = statement["Effect"].as_str().expect("Effect").to_string();
            for action in strings(&statement["Action"]) {
                for resource in strings(&statement["Resource"]) {
                    grants.push((effect.clone(), action.clone(), resource));
                }
            }
        }
        grants.sort();
        let bucket = "acs:oss:*:*:my-images-bucket";
        assert_eq!(
            grants,
            [
                (
                    "Allow".into(),
                    "oss:GetObject".into(),
                    format!("{bucket}/uploads/*")
                ),
                (
                    "Allow".into(),
                    "oss:PutObject".into(),
                    format!("{bucket}/results/*")
                ),
            ]
        );
    }

    #[test]
    fn function_role_is_trusted_by_function_compute_and_named_in_s_yaml() {
        let trust = json("deploy/ram/function-role-trust.json");
        let statement = &trust["Statement"][0];
        assert_eq!(statement["Action"], "sts:AssumeRole");
        assert_eq!(
            strings(&statement["Principal"]["Service"]),
            ["fc.aliyuncs.com"]
        );
        let doc = syaml::load("s.yaml");
        let script = std::fs::read_to_string(repo().join("deploy/ram/create-function-role.sh"))
            .expect("script");
        let role = &doc.vars["functionRole"];
        assert!(
            script.contains(&format!("role=${{2:-{role}}}")),
            "same default role name"
        );
        for file in ["function-role-trust.json", "function-role-policy.json"] {
            assert!(script.contains(file), "{file} used by the script");
        }
        let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
        assert!(readme.contains("deploy/ram/create-function-role.sh"));
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

/// The READMEs as a new user reads them: every file of this repository they name must exist,
/// and the English and the Chinese README state the same shell commands and link to each other.
mod readme {
    use super::repo;

    /// The two READMEs: English, and Simplified Chinese for Alibaba Cloud's users.
    const READMES: [&str; 2] = ["README.md", "README.zh-CN.md"];

    fn read(name: &str) -> String {
        std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Directories whose files the README names; `model/` is left out (its weights are made by
    /// the commands the README shows, not shipped).
    const PREFIXES: [&str; 10] = [
        "src/",
        "docs/",
        "deploy/",
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
            .map(|w| w.split('#').next().unwrap_or(w))
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
                    Globs src/cli_*.rs and <file> and tools/x/{a,b} are skipped; cp src/a.rs: \
                    [docs](docs/deploy.md#network).";
        assert_eq!(
            mentioned_paths(text),
            [
                ".ci/run",
                "docs/deploy.md",
                "src/a.rs",
                "tests/fixtures/golden/chelsea.jpg"
            ]
        );
    }

    #[test]
    fn every_repository_path_in_the_readmes_exists() {
        let root = repo();
        for name in READMES {
            let paths = mentioned_paths(&read(name));
            assert!(
                paths.len() >= 10,
                "{name}: too few paths found, extraction broken? {paths:?}"
            );
            let missing: Vec<&String> = paths.iter().filter(|p| !root.join(p).exists()).collect();
            assert!(
                missing.is_empty(),
                "{name} names missing files: {missing:?}"
            );
        }
    }

    /// Info strings of the fenced blocks that hold shell commands.
    const SHELL_LANGUAGES: [&str; 4] = ["sh", "bash", "shell", "console"];

    /// The fenced shell blocks of a Markdown text, in order, each as its lines between the
    /// fences with the opening fence's indentation removed (a block inside a list item is
    /// indented). A fence left open is an error.
    fn shell_blocks(markdown: &str) -> Result<Vec<String>, String> {
        /// The block being read: where it opened, its indentation and fence length, whether it
        /// is a shell block, and its lines so far.
        struct Open<'a> {
            line: usize,
            indent: usize,
            fence: usize,
            shell: bool,
            lines: Vec<&'a str>,
        }
        let mut blocks = Vec::new();
        let mut open: Option<Open> = None;
        for (number, line) in markdown.lines().enumerate() {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let body = &line[indent..];
            let ticks = body.len() - body.trim_start_matches('`').len();
            match open.as_mut() {
                None if ticks >= 3 => {
                    let info = body[ticks..].split_whitespace().next().unwrap_or("");
                    open = Some(Open {
                        line: number + 1,
                        indent,
                        fence: ticks,
                        shell: SHELL_LANGUAGES.contains(&info),
                        lines: Vec::new(),
                    });
                }
                None => {}
                Some(block) if ticks >= block.fence && body[ticks..].trim().is_empty() => {
                    if block.shell {
                        blocks.push(block.lines.join("\n"));
                    }
                    open = None;
                }
                Some(block) => block.lines.push(&line[indent.min(block.indent)..]),
            }
        }
        match open {
            Some(block) => Err(format!(
                "code fence opened on line {} is never closed",
                block.line
            )),
            None => Ok(blocks),
        }
    }

    #[test]
    fn shell_block_extraction_keeps_commands_and_skips_other_blocks() {
        let markdown = "Intro\n\
                        ```sh\ncargo test\n```\n\
                        ```json\n{\"a\": 1}\n```\n\
                        1. step\n   ```bash\n   s deploy -y\n     --flag\n   ```\n\
                        ```\nplain output\n```\n\
                        ````sh\necho ```\n````\n";
        assert_eq!(
            shell_blocks(markdown).expect("closed fences"),
            ["cargo test", "s deploy -y\n  --flag", "echo ```"]
        );
        assert!(shell_blocks("```sh\ncargo test\n").is_err(), "open fence");
    }

    /// Blocks of `from` that `to` does not have, as text for a failure message.
    fn missing_blocks(from: &[String], to: &[String]) -> Vec<String> {
        from.iter()
            .filter(|b| !to.contains(b))
            .map(|b| format!("```sh\n{b}\n```"))
            .collect()
    }

    #[test]
    fn both_readmes_state_the_same_shell_commands() {
        let [english, chinese] =
            READMES.map(|name| shell_blocks(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}")));
        assert!(
            english.len() >= 10,
            "too few shell blocks in README.md, extraction broken? {english:?}"
        );
        let only_english = missing_blocks(&english, &chinese);
        assert!(
            only_english.is_empty(),
            "shell blocks of README.md missing from README.zh-CN.md:\n{}",
            only_english.join("\n")
        );
        let only_chinese = missing_blocks(&chinese, &english);
        assert!(
            only_chinese.is_empty(),
            "shell blocks of README.zh-CN.md missing from README.md:\n{}",
            only_chinese.join("\n")
        );
    }

    #[test]
    fn the_readmes_link_to_each_other_at_the_top() {
        for (name, link) in [
            ("README.md", "[简体中文](README.zh-CN.md)"),
            ("README.zh-CN.md", "[English](README.md)"),
        ] {
            let text = read(name);
            let top: Vec<&str> = text.lines().take(5).collect();
            assert!(
                top.iter().any(|line| line.contains(link)),
                "{name} must link `{link}` in its first 5 lines: {top:?}"
            );
        }
    }
}
