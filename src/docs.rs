//! The manual page `nodeprep(8)` and the shell completion scripts, both
//! generated from the command-line definition (`cli`), so they never
//! disagree with `--help`. `nodeprep man` and `nodeprep completions SHELL`
//! print them; the Debian package ships what they print
//! (`packaging/build-deb.sh`).

use std::io::{self, Write};

use clap::{Arg, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, CompletionShell};
use crate::config;

/// The man page's section: system administration commands.
pub const MAN_SECTION: &str = "8";

/// A completion script for `shell`, for the binary named `nodeprep`.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nodeprep", &mut out);
    out
}

/// `nodeprep(8)` in roff: the global options, every command with its own
/// options, exit status, files, environment.
pub fn man() -> io::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let top = Man::new(cmd.clone()).section(MAN_SECTION);

    let mut out = Vec::new();
    // The title line by hand: roff drops the empty date argument, which
    // would shift the source and the manual into the wrong fields.
    writeln!(
        out,
        ".TH NODEPREP {MAN_SECTION} \"\" \"nodeprep {version}\" \"System Administration\""
    )?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    description().to_writer(&mut out)?;
    top.render_options_section(&mut out)?;

    let globals: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().to_string())
        .collect();
    let mut commands = Roff::new();
    commands.control("SH", ["COMMANDS"]);
    commands.to_writer(&mut out)?;
    for sub in cmd.get_subcommands() {
        command_section(sub, &globals, &mut out)?;
    }
    trailer().to_writer(&mut out)?;
    Ok(one_preamble(&out))
}

/// Every `Roff::to_writer` starts with the same two-line preamble (how to
/// typeset apostrophes): keep the first, at the top.
fn one_preamble(page: &[u8]) -> Vec<u8> {
    const PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];
    let text = String::from_utf8_lossy(page);
    let mut out = format!("{}\n{}\n", PREAMBLE[0], PREAMBLE[1]);
    for line in text.lines().filter(|l| !PREAMBLE.contains(l)) {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// One `.SS` per command (and per subcommand of `config`): its synopsis,
/// what it does and its own options; the global options are in OPTIONS.
fn command_section(sub: &clap::Command, globals: &[String], out: &mut Vec<u8>) -> io::Result<()> {
    if sub.has_subcommands() {
        for inner in sub.get_subcommands() {
            command_section(inner, globals, out)?;
        }
        return Ok(());
    }
    let mut sub = sub.clone();
    for id in globals.iter().map(String::as_str).chain(["help"]) {
        if sub.get_arguments().any(|a| a.get_id() == id) {
            sub = sub.mut_arg(id, |a: Arg| a.hide(true));
        }
    }
    let name = sub
        .get_bin_name()
        .unwrap_or_else(|| sub.get_name())
        .to_string();
    let mut roff = Roff::new();
    roff.control("SS", [name.as_str()]);
    roff.to_writer(out)?;
    let man = Man::new(sub.clone());
    out.extend(without_heading(|w| man.render_synopsis_section(w))?);
    let about = sub
        .get_long_about()
        .or_else(|| sub.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut roff = Roff::new();
    roff.control("PP", []);
    roff.text([roman(about)]);
    roff.to_writer(out)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        out.extend(without_heading(|w| man.render_options_section(w))?);
    }
    Ok(())
}

/// A clap_mangen section without its `.SH` line, to nest it under `.SS`.
fn without_heading(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let text = String::from_utf8(buf).map_err(io::Error::other)?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(body.into_bytes())
}

fn para(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.text([roman(text)]);
}

fn description() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("nodeprep"),
        roman(
            " turns a Linux Docker host into a Consul-ready node using the \"dummy interface\" \
             layout, audits hosts set up that way, and undoes it. The layout: a dummy0 link \
             holding 169.254.1.1/32, systemd-networkd files that bring it back at boot, a \
             dnsmasq drop-in forwarding the consul domain to the agent, the agent's \
             configuration in /etc/consul.d, CONSUL_HTTP_ADDR in /etc/environment, and the \
             consul and registrator containers.",
        ),
    ]);
    para(
        &mut r,
        "apply converges the host and is idempotent: a second run changes nothing. check \
         audits read-only, with the live probes of the whole chain. remove undoes what apply \
         set up, putting back the files nodeprep replaced.",
    );
    para(
        &mut r,
        "Removing the nodeprep package does not undo the layout: the host keeps its service \
         discovery. Run nodeprep remove first to undo it.",
    );
    r
}

fn item(r: &mut Roff, tag: &str, text: &str) {
    r.control("TP", []);
    r.text([bold(tag)]);
    r.text([roman(text)]);
}

fn trailer() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    item(
        &mut r,
        "0",
        "Converged (apply, remove) or compliant (check).",
    );
    item(
        &mut r,
        "1",
        "A step failed at runtime; the other resources are still converged and reported.",
    );
    item(
        &mut r,
        "2",
        "Drift found by check (a failed probe counts), or changes pending under --dry-run or plan.",
    );
    item(&mut r, "64", "Bad command line.");
    item(
        &mut r,
        "77",
        "Not permitted: live apply and remove must run as root.",
    );
    item(
        &mut r,
        "78",
        "Invalid configuration; the message names the file, line and key.",
    );
    para(
        &mut r,
        "Nothing on the host changes when the exit status is 64, 77 or 78.",
    );

    r.control("SH", ["FILES"]);
    item(
        &mut r,
        config::DEFAULT_PATH,
        "The configuration. When it does not exist the embedded default applies; \
         nodeprep config default prints it, with comments.",
    );
    item(
        &mut r,
        "/var/lib/nodeprep/",
        "The state record (state.json) and the originals of files nodeprep replaced, \
         which remove puts back.",
    );
    item(
        &mut r,
        "/run/nodeprep.lock",
        "Serializes live apply and remove runs.",
    );
    item(
        &mut r,
        "nodeprep.service",
        "Runs nodeprep apply at every boot, after the network and Docker.",
    );
    item(
        &mut r,
        "nodeprep-check.timer, nodeprep-check.service",
        "Run nodeprep check --report-consul every 15 minutes; the result is the nodeprep \
         TTL check on the local Consul agent and lands in the journal.",
    );

    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        "NO_COLOR",
        "When set, human output is not coloured (it is not coloured when piped either).",
    );

    r.control("SH", ["EXAMPLES"]);
    r.text([roman("Converge this host, then audit it:")]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.text([bold("nodeprep apply")]);
    r.control("br", []);
    r.text([bold("nodeprep check --format json")]);
    r.control("RE", []);
    r.control("PP", []);
    r.text([roman(
        "See what apply would write, without touching the host:",
    )]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.text([bold("nodeprep --root "), italic("DIR"), bold(" plan")]);
    r.control("RE", []);

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("dnsmasq"),
        roman("(8), "),
        bold("systemd.netdev"),
        roman("(5), "),
        bold("systemd.network"),
        roman("(5), "),
        bold("systemctl"),
        roman("(1), "),
        bold("docker"),
        roman("(1); /usr/share/doc/nodeprep/README.md and the examples beside it."),
    ]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn man_text() -> String {
        String::from_utf8(man().unwrap()).unwrap()
    }

    #[test]
    fn man_page_has_every_command_and_option() {
        let text = man_text();
        assert!(
            text.contains("\n.TH NODEPREP 8 \"\" \"nodeprep "),
            "{}",
            &text[..200]
        );
        assert_eq!(text.matches(".ds Aq").count(), 2, "one preamble");
        for heading in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "COMMANDS",
            "\"EXIT STATUS\"",
            "FILES",
            "\"SEE ALSO\"",
        ] {
            assert!(
                text.contains(&format!("\n.SH {heading}\n")),
                "no {heading} section"
            );
        }
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let names: Vec<String> = if sub.has_subcommands() {
                sub.get_subcommands()
                    .map(|s| format!("nodeprep {} {}", sub.get_name(), s.get_name()))
                    .collect()
            } else {
                vec![format!("nodeprep {}", sub.get_name())]
            };
            for name in names {
                assert!(
                    text.contains(&format!(".SS \"{name}\"")),
                    "no section for {name}"
                );
            }
            for arg in sub.get_arguments().filter_map(|a| a.get_long()) {
                assert!(
                    text.contains(&format!("\\-\\-{}", arg.replace('-', "\\-"))),
                    "--{arg} of {} missing",
                    sub.get_name()
                );
            }
        }
        // Global options once, in OPTIONS, not repeated under every command.
        assert_eq!(
            text.matches("\\fB\\-\\-format\\fR").count(),
            2,
            "synopsis + OPTIONS"
        );
    }

    #[test]
    fn completions_name_every_command() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let text = String::from_utf8(completions(shell)).unwrap();
            for sub in Cli::command().get_subcommands() {
                assert!(
                    text.contains(sub.get_name()),
                    "{shell:?}: {} missing",
                    sub.get_name()
                );
            }
        }
    }
}
