//! `workload-standin`: a TEST workload container for registrator tests (the
//! "web" service whose published port registrator registers). It serves
//! nothing: prints its `ready:` line and waits for SIGTERM, then exits 0.

use nodeprep_standins::{main_with, signals, Banner};

const BANNER: Banner = Banner("workload-standin (test workload, NOT a real service)");

fn main() {
    main_with(BANNER, || {
        let args: Vec<String> = std::env::args().skip(1).collect();
        println!("{BANNER}: ready: args {args:?}");
        signals::wait();
        Ok(())
    })
}
