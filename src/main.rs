//! The `scip-orchestrator` binary: parses the command line, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scip_orchestrator::app::logging::{self, LogFormat};
use scip_orchestrator::app::{self, BrokerAclArgs, DemoArgs, DemoDefaults, RunArgs, ServeArgs};
use scip_orchestrator::config::Config;
use scip_orchestrator::domain::Speed;

/// Runs crisis exercises: delivers every team's injects to its MQTT feed at the
/// exercise second they are due.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a scenario and its timelines; print a summary or every error.
    Validate {
        /// The scenario JSON file.
        scenario: PathBuf,
    },
    /// Run one exercise in the foreground against the configured broker.
    Run {
        /// The scenario JSON file.
        scenario: PathBuf,
        /// Exercise id (default: the scenario's `id`, else a generated one).
        #[arg(long)]
        exercise_id: Option<String>,
        /// Exercise seconds per wall second (10 or 60 for a rehearsal),
        /// above 0 and at most 1000.
        #[arg(long, default_value_t = Speed::ONE)]
        speed: Speed,
        /// Wait for a start command on the control topic.
        #[arg(long)]
        wait_for_start: bool,
        /// Write every delivery record as JSON to this file at the end.
        #[arg(long)]
        report: Option<PathBuf>,
        /// MQTT client id (default: scip-orchestrator-<exercise id>).
        #[arg(long, env = "MQTT_CLIENT_ID")]
        client_id: Option<String>,
    },
    /// Host every exercise with the HTTP API; state survives restarts.
    Serve {
        /// Address of the HTTP API.
        #[arg(long, env = "HTTP_BIND", default_value = "127.0.0.1:8080")]
        http_bind: String,
        /// sqlite://FILE or postgres://... (default: a SQLite file in DATA_DIR).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Folder of the default SQLite database.
        #[arg(long, env = "DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Base URL of this service as users reach it, for dashboard links
        /// (default: http://HTTP_BIND).
        #[arg(long, env = "PUBLIC_URL")]
        public_url: Option<String>,
        /// MQTT client id (default: scip-orchestrator-serve-<HTTP port>).
        #[arg(long, env = "MQTT_CLIENT_ID")]
        client_id: Option<String>,
    },
    /// Run the built-in sample exercise with the embedded broker, a fresh
    /// SQLite store and the dashboards; prints their URLs.
    Demo {
        /// Address of the HTTP API and pages (default: 127.0.0.1:8080, or a
        /// free port when 8080 is taken).
        #[arg(long, env = "HTTP_BIND")]
        http_bind: Option<String>,
        /// The default ports, `HTTP,MQTT,WS`, in place of 8080,1883,8083:
        /// for tests, which cannot rely on those being taken or free.
        #[arg(long, env = "DEMO_DEFAULT_PORTS", hide = true)]
        default_ports: Option<DemoDefaults>,
        /// Folder of the demo's database (replaced at every run) and, unless
        /// MEDIA_STORAGE_PATH is set, of the sample scenario's files.
        #[arg(long, default_value = "demo-data")]
        data_dir: PathBuf,
        /// Exercise seconds per wall second: 5 shows the 12-minute sample in
        /// under 3 minutes (above 0, at most 1000).
        #[arg(long, default_value = "5")]
        speed: Speed,
        /// Create the exercise but hold it at T+0 until it is started (Enter
        /// on the terminal, the control room, the API or the control topic),
        /// so dashboards can join first.
        #[arg(long)]
        wait_for_start: bool,
    },
    /// Import a scenario package folder (scenario file, timelines, media)
    /// into MEDIA_STORAGE_PATH, validated first.
    Import {
        /// The package folder.
        dir: PathBuf,
        /// Its name there (default: its scenario_id, else the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Overwrite a stored package of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Read a spreadsheet MSEL (.xlsx or .csv, one row per inject) into a
    /// scenario: a new folder (scenario.json and timelines/) or one package
    /// file (.json), validated first; every problem names its sheet, row
    /// and column.
    ///
    /// Columns are recognised by their headers (case does not matter):
    /// time (Time, T+, Offset, Exercise time, Seconds: seconds or T+mm:ss),
    /// team (Team, Teams, Recipient(s), To: separated by , or ;, or "all"),
    /// type (Type, Channel, Inject type), title (Title, Subject, Headline),
    /// content (Content, Body, Message, Text, Description), priority,
    /// media (Media, Attachment(s), File: separated by ;), action (Action,
    /// Expected action), id (ID, Inject ID, Ref) and details (Details: a
    /// JSON object of further fields).
    #[command(after_help = "Examples:
  scip-orchestrator msel-import drill.xlsx --out drill
  scip-orchestrator msel-import plan.csv --column time=When --column team=\"Sent to\" --out plan.json")]
    MselImport {
        /// The MSEL: a .xlsx workbook or a .csv file (UTF-8, , or ; separated).
        file: PathBuf,
        /// The sheet of injects (default: the first with a recognised header row).
        #[arg(long)]
        sheet: Option<String>,
        /// FIELD=HEADER: the column of a field, where its header is not one
        /// recognised (fields: id, time, team, type, title, content,
        /// priority, media, action, details). Repeat for several.
        #[arg(long = "column", value_name = "FIELD=HEADER")]
        columns: Vec<String>,
        /// scenario_id and name of the scenario (default: the workbook's
        /// Scenario sheet, else the file name).
        #[arg(long)]
        name: Option<String>,
        /// A new folder, or a file ending in .json for one package file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a scenario as a spreadsheet MSEL (.xlsx): an MSEL sheet with
    /// one row per inject, and the Teams and Scenario sheets msel-import
    /// reads back into the same scenario.
    MselExport {
        /// The scenario JSON file, or a folder holding one.
        scenario: PathBuf,
        /// The new .xlsx file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the API_TOKENS entry of a token (`role:sha256`); with --new,
    /// make a new random token first. The token is read from standard input
    /// when not given.
    HashToken {
        token: Option<String>,
        /// Make a new token.
        #[arg(long)]
        new: bool,
        /// Its role: observer, evaluator, controller or admin.
        #[arg(long, default_value = "controller")]
        role: String,
    },
    /// Export a stored package to a new folder, or to a .tar.gz archive.
    Export {
        /// The package's name in MEDIA_STORAGE_PATH.
        name: String,
        /// A new folder, or a file ending in .tar.gz or .tgz.
        #[arg(long)]
        to: PathBuf,
    },
    /// Write a Mosquitto password file and ACL for one exercise: a user per
    /// team (its own feed, the clock, status, monitoring), a controller and
    /// the engine; the passwords go to a credentials file (mode 0600).
    BrokerAcl {
        /// The exercise id: the `{exerciseId}` of its topics.
        exercise: String,
        /// Take the teams from this scenario file (else from the exercise
        /// stored in the service's database).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// sqlite://FILE or postgres://... (default: a SQLite file in DATA_DIR).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Folder of the default SQLite database.
        #[arg(long, env = "DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Folder to write the files to.
        #[arg(long)]
        out: PathBuf,
        /// The engine's user name (default: <exercise>-engine).
        #[arg(long)]
        engine_user: Option<String>,
        /// Replace files written before (and with them every password).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs JSON unless told otherwise; the CLI logs for people.
    let format = match (&cli.command, std::env::var_os("LOG_FORMAT")) {
        (Cmd::Serve { .. }, None) => LogFormat::Json,
        _ => LogFormat::from_env(),
    };
    logging::init(format);
    match cli.command {
        Cmd::Validate { scenario } => ExitCode::from(app::validate(&scenario, &cli.config) as u8),
        Cmd::Run {
            scenario,
            exercise_id,
            speed,
            wait_for_start,
            report,
            client_id,
        } => {
            let args = RunArgs {
                scenario,
                exercise_id,
                speed,
                wait_for_start,
                report,
                client_id,
            };
            finish(block_on(app::run(args, &cli.config)))
        }
        Cmd::Serve {
            http_bind,
            database_url,
            data_dir,
            public_url,
            client_id,
        } => {
            let args = ServeArgs {
                http_bind,
                database_url,
                data_dir,
                public_url,
                client_id,
            };
            finish(block_on(app::serve(args, &cli.config)))
        }
        Cmd::Demo {
            http_bind,
            default_ports,
            data_dir,
            speed,
            wait_for_start,
        } => {
            let args = DemoArgs {
                http_bind,
                defaults: default_ports.unwrap_or_default(),
                data_dir,
                speed,
                wait_for_start,
            };
            finish(block_on(app::demo(args, &cli.config)))
        }
        Cmd::Import { dir, name, replace } => finish(app::import_package(
            &dir,
            name.as_deref(),
            replace,
            &cli.config,
        )),
        Cmd::Export { name, to } => finish(app::export_package(&name, &to, &cli.config)),
        Cmd::MselImport {
            file,
            sheet,
            columns,
            name,
            out,
        } => finish(app::msel_import(
            app::MselImportArgs {
                file,
                sheet,
                columns,
                name,
                out,
            },
            &cli.config,
        )),
        Cmd::MselExport { scenario, out } => finish(app::msel_export(&scenario, &out, &cli.config)),
        Cmd::HashToken { token, new, role } => finish(app::hash_token(token, new, &role)),
        Cmd::BrokerAcl {
            exercise,
            scenario,
            database_url,
            data_dir,
            out,
            engine_user,
            force,
        } => {
            let args = BrokerAclArgs {
                exercise,
                scenario,
                database_url,
                data_dir,
                out,
                engine_user,
                force,
            };
            finish(block_on(app::broker_acl(args, &cli.config)))
        }
    }
}

fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(work)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
