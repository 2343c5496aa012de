//! `registrator-standin`: a TEST STAND-IN for registrator, NOT registrator.
//! See `nodeprep_standins::registrator`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let banner = nodeprep_standins::registrator::BANNER;
    nodeprep_standins::main_with(banner, || nodeprep_standins::registrator::run(&args))
}
