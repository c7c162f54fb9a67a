//! The `realm` command line: parses the arguments and hands each subcommand to its module under
//! `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "realm",
    version,
    about = "REALM retrieval-augmented language model kernels and training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Selftest(cli::selftest::SelftestArgs),
    Embed(cli::embed::EmbedArgs),
    Vocab(cli::vocab::VocabArgs),
    Report(cli::report::ReportArgs),
    Index(cli::index::IndexArgs),
    Import(cli::import::ImportArgs),
    Search(cli::search::SearchArgs),
    Eval(cli::eval::EvalArgs),
    Demo(cli::demo::DemoArgs),
    Experiment(cli::experiment::ExperimentArgs),
    Ask(cli::ask::AskArgs),
    Bench(cli::bench::BenchArgs),
    Ict(cli::ict::IctArgs),
    Pretrain(cli::pretrain::PretrainArgs),
    Finetune(cli::finetune::FinetuneArgs),
}

fn main() -> ExitCode {
    realm::alloc::tune_for_tensors();
    let cli = Cli::parse();
    // MPI when started by mpirun in an `mpi` build (src/dist/); one process otherwise.
    let _world = match realm::dist::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let world = realm::dist::world();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has stopped reading (`realm search ... | head -1`): done.
        Err(e) if cli::closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if world.size() > 1 => {
            // The other ranks would wait for this one: end them all (MPI_Abort).
            eprintln!("Error: rank {} of {}: {e:?}", world.rank(), world.size());
            world.abort(1)
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    realm::ops::check_cpu_simd_env()?;
    match command {
        Command::Selftest(args) => cli::selftest::run(args),
        Command::Embed(args) => cli::embed::run(args),
        Command::Vocab(args) => cli::vocab::run(args),
        Command::Report(args) => cli::report::run(args),
        Command::Index(args) => cli::index::run(args),
        Command::Import(args) => cli::import::run(args),
        Command::Search(args) => cli::search::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Experiment(args) => cli::experiment::run(args),
        Command::Ask(args) => cli::ask::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Ict(args) => cli::ict::run(args),
        Command::Pretrain(args) => cli::pretrain::run(args),
        Command::Finetune(args) => cli::finetune::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
