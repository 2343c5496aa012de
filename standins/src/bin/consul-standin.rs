//! `consul-standin`: a TEST STAND-IN for the Consul agent, NOT Consul.
//! See `nodeprep_standins::consul`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let banner = nodeprep_standins::consul::BANNER;
    nodeprep_standins::main_with(banner, || nodeprep_standins::consul::run(&args))
}
