//! `portcullis-load`: open-loop HTTP load at a fixed rate against one or several gateways,
//! with a rate-limit accuracy table (see `portcullis_testkit::load`, or `--help`).

use std::process::ExitCode;

use portcullis_testkit::load::options::{Options, Parsed, USAGE};
use portcullis_testkit::load::{self, Totals, analysis};

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("portcullis-load: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let run = match runtime.block_on(load::run(&opts)) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("portcullis-load: {e}");
            return ExitCode::from(2);
        }
    };

    let totals = Totals::of(&run, opts.targets.len());
    let reports = analysis::account(&run.records, &load::accounting(&opts));
    print!("{}", load::markdown(&opts, &run, &totals, &reports));
    if let Some(path) = &opts.json {
        let body = load::json_report(&opts, &run, &totals, &reports);
        let text = serde_json::to_string_pretty(&body).expect("JSON of plain values");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("portcullis-load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &opts.csv
        && let Err(e) = std::fs::write(path, load::csv(&opts, &run))
    {
        eprintln!("portcullis-load: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }

    let errors = totals.error_count();
    if opts.max_errors.exceeded(errors, totals.sent) {
        eprintln!(
            "portcullis-load: {errors} transport errors out of {} requests: above --max-errors",
            totals.sent
        );
        return ExitCode::from(1);
    }
    if opts.strict {
        let bad = reports
            .iter()
            .any(|p| p.total.beyond.unwrap_or(0) > 0 || p.total.false_limited.unwrap_or(0) > 0);
        if bad {
            eprintln!("portcullis-load: --strict: allowed beyond the limit or false 429s");
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}
