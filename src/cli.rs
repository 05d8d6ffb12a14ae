//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "ca-a2a-flow", version, about = "Durable workflows that deploy and operate the CA-A2A stack", long_about = None)]
pub struct Cli {
    /// State store: a SQLite file path (`sqlite://PATH` or a plain path) or a
    /// `postgres://` URL. Default: $XDG_STATE_HOME/ca-a2a-flow/state.db.
    #[arg(long, global = true, env = "CA_A2A_FLOW_STATE")]
    pub state: Option<String>,

    /// How long a run's lease lasts without a heartbeat before another process
    /// may take the run over.
    #[arg(long, global = true, env = "CA_A2A_FLOW_LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: std::time::Duration,

    /// Show the libraries' own logs too (the AWS SDK's retries and credential
    /// lookups): `-v` their warnings, `-vv` their debug logs. `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a workflow, record a new run and execute it.
    Run {
        file: PathBuf,
        /// An input value, `name=value` (repeatable).
        #[arg(long = "input", short = 'i', value_parser = parse_key_value)]
        inputs: Vec<(String, String)>,
        /// Go on although this preflight check fails (repeatable): credentials,
        /// region, vpc-quota, eip-quota, permissions, disk, builder.
        #[arg(long = "skip-preflight", value_name = "NAME", env = "CA_A2A_FLOW_SKIP_PREFLIGHT", value_delimiter = ',')]
        skip_preflight: Vec<String>,
        /// How many independent steps may run at once.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
        /// Approve the steps marked `approve:` (irreversible) without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Continue an interrupted or failed run from its last checkpoint.
    Resume {
        run_id: String,
        /// Re-run the steps whose definition changed in the workflow file, and their dependents.
        #[arg(long)]
        accept_changes: bool,
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
        /// Approve the steps marked `approve:` (irreversible) without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Show a run: its state and every step's state, attempts, durations and last error.
    Status {
        run_id: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List runs, newest first.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show a run's event log (step output, attempts, errors).
    Logs {
        run_id: String,
        #[arg(long)]
        step: Option<String>,
        /// Keep printing new events until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Remove what a deploy run made, in reverse dependency order. The destroy is
    /// itself a run: checkpointed, resumable with `resume`.
    Destroy {
        /// The deploy run whose resources to remove.
        run_id: String,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long)]
        yes: bool,
        /// Also empty and delete S3 buckets (kept by default).
        #[arg(long)]
        delete_data: bool,
        /// Also delete ECR repositories and their images (kept by default).
        #[arg(long)]
        delete_images: bool,
        /// Delete secrets at once, without Secrets Manager's 7-day recovery window.
        #[arg(long)]
        force_delete_secrets: bool,
        /// Delete databases without a final snapshot.
        #[arg(long)]
        skip_final_snapshot: bool,
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// List resources tagged by ca-a2a-flow whose stack no run of this state store
    /// owns (leftovers of killed or forgotten attempts); `--delete --yes` removes them.
    Gc {
        /// Only this stack's.
        #[arg(long)]
        stack: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Remove them, in dependency order (a destroy run per stack).
        #[arg(long)]
        delete: bool,
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A deployed stack's ECS services: desired, running and pending tasks,
    /// deployments, target health.
    Services {
        /// The deploy run.
        run_id: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop a deployed stack's ECS services (desired count 0); `start` brings them back.
    Stop { run_id: String },
    /// Start a stopped stack's ECS services again, at the desired counts its deploy recorded.
    Start { run_id: String },
    /// Give a secret a deploy run made a new random value (generated inside AWS,
    /// never shown), then redeploy the services whose tasks read it.
    RotateSecret {
        run_id: String,
        /// The secret's step, like keycloak-admin.
        step: String,
        #[arg(long, default_value_t = 32)]
        length: i64,
    },
    /// Print a service's CloudWatch logs (the last 10 minutes), and follow them with -f.
    Tail {
        run_id: String,
        /// The service's step, like keycloak.
        service: String,
        #[arg(long, short = 'f')]
        follow: bool,
        /// How far back to start, like 10m or 2h.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        since: std::time::Duration,
    },
    /// Validate a workflow and queue a run of it for a worker; prints the run's id at once.
    Submit {
        file: PathBuf,
        /// An input value, `name=value` (repeatable).
        #[arg(long = "input", short = 'i', value_parser = parse_key_value)]
        inputs: Vec<(String, String)>,
        /// Go on although this preflight check fails (repeatable), as with `run`.
        #[arg(long = "skip-preflight", value_name = "NAME", env = "CA_A2A_FLOW_SKIP_PREFLIGHT", value_delimiter = ',')]
        skip_preflight: Vec<String>,
        /// Approve the steps marked `approve:` (irreversible) now: a worker cannot ask.
        #[arg(long)]
        yes: bool,
        /// Follow the run's log until it ends, and exit as `run` would.
        #[arg(long)]
        wait: bool,
    },
    /// Drive queued runs (`submit`), those a dead worker left included, until
    /// SIGTERM; then hand back the runs being driven and exit.
    Worker {
        /// How many runs this worker drives at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// How many independent steps of one run may run at once.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Ask the process running a run to stop it (or mark an idle run cancelled).
    Cancel { run_id: String },
    /// Serve a live web page of the state store's runs: each run's graph,
    /// timeline, steps, waits and log, updated as they change.
    Ui {
        /// Where to listen. Any address but loopback needs a token.
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
        /// The token every request must carry (open the page once as
        /// `/?token=TOKEN`); needed to listen beyond loopback.
        #[arg(long, env = "CA_A2A_FLOW_UI_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the token (kept out of the process list).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Let the page cancel and resume runs (each asks for confirmation).
        #[arg(long)]
        allow_actions: bool,
    },
    /// What a run would do: the steps in waves and, with read-only calls, per step
    /// `create`, `adopt`, `update` (with old and new values) or `conflict`.
    Plan {
        file: PathBuf,
        #[arg(long = "input", short = 'i', value_parser = parse_key_value)]
        inputs: Vec<(String, String)>,
        /// `--format` is still read, as an older name of this flag.
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Only the waves: no call to AWS.
        #[arg(long)]
        offline: bool,
    },
    /// Estimate a workflow's monthly AWS cost, per resource (no AWS call).
    Cost {
        file: PathBuf,
        #[arg(long = "input", short = 'i', value_parser = parse_key_value)]
        inputs: Vec<(String, String)>,
        /// The region to price (default: the workflow's `region` input, then AWS_REGION).
        #[arg(long)]
        region: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check a workflow file and report every problem; runs nothing.
    Validate { file: PathBuf },
    /// Print a workflow's dependency graph.
    Graph {
        file: PathBuf,
        /// `--format` is still read, as an older name of this flag.
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// List the step kinds, or describe one.
    Steps {
        #[command(subcommand)]
        what: Option<StepsCommand>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StepsCommand {
    /// Parameters, outputs and an example of one kind.
    Describe { kind: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Mermaid,
    Dot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not name=value")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    ca_a2a_flow_engine::duration::parse(s)
}

pub fn parse() -> Cli {
    Cli::parse()
}
