package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/daemon"
)

const usage = `popproxy is a POP3 proxy that checks every command and audits mailbox access.

usage:
  popproxy [run] -config FILE           serve POP3 with this configuration
  popproxy [run] -config FILE -check    check the configuration and every file it names, then exit
  popproxy demo [-listen ADDR] [-listen-tls ADDR]
                                        serve a built-in sample mail drop through popproxy
  popproxy audit verify FILE...         check the hash chain of audit files, oldest first
  popproxy audit report FILE...         summarise audit files per user
  popproxy limits show|clear -config FILE USER|ADDRESS
                                        show or clear a user's or an address's limits: the fleet's
                                        (limits.shared), else the instance's (admin.address)
  popproxy limits -admin HOST:PORT show|clear USER|ADDRESS
                                        the same through an instance's admin listener
  popproxy version                      print the version, revision, build date and Go version
  popproxy help [COMMAND]               print this help, or a command's

Exit status: 0 done, 1 failed, 2 wrong command line.
`

// usageError is a mistake on the command line: it is printed with the usage
// of the command at fault, and popproxy exits with status 2.
type usageError struct {
	msg   string
	usage string
}

func (e usageError) Error() string { return e.msg }

// cli runs the command line args (without the program name) and returns the
// exit status. A first argument that is not a flag names the command; with
// none, the command is run.
func cli(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	var err error
	switch name {
	case "run":
		err = runCommand(args, stdout, stderr)
	case "demo":
		err = demoCommand(args, stdout, stderr)
	case "audit":
		err = auditSubcommand(args, stdout, stderr)
	case "limits":
		err = limitsCommand(args, stdout, stderr)
	case "version":
		if err = parseFlags(flag.NewFlagSet("version", flag.ContinueOnError), args, "usage: popproxy version\n", stdout); err == nil {
			err = printVersion(stdout)
		}
	case "help":
		err = helpCommand(args, stdout, stderr)
	default:
		err = usageError{fmt.Sprintf("unknown command %q", name), usage}
	}
	return exitStatus(err, stderr)
}

// exitStatus reports err and maps it to popproxy's exit status.
func exitStatus(err error, stderr io.Writer) int {
	var ue usageError
	var code exitCode
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // help went to stdout
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "popproxy: %s\n\n%s", ue.msg, ue.usage)
		return 2
	}
	fmt.Fprintln(stderr, "popproxy:", err)
	return 1
}

// parseFlags parses a command's flags. For -h it prints the usage and the
// flags to stdout and returns flag.ErrHelp; an unknown flag, or any argument
// left over, is a usageError.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) error {
	fs.SetOutput(io.Discard) // the flag package's own messages; ours follow
	err := fs.Parse(args)
	var defaults strings.Builder
	fs.SetOutput(&defaults)
	fs.PrintDefaults()
	if defaults.Len() > 0 {
		usage += "\nflags:\n" + defaults.String()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	case err != nil:
		return usageError{err.Error(), usage}
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0)), usage}
	}
	return nil
}

// runCommand is `popproxy [run] -config FILE [-check]`, and -version.
func runCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration `FILE` (YAML)")
	check := fs.Bool("check", false, "check the configuration and every file it names, then exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := parseFlags(fs, args, usage, stdout); err != nil {
		return err
	}
	if *showVersion {
		return printVersion(stdout)
	}
	if *configPath == "" {
		if *check {
			return usageError{"-check checks a configuration file: -config is required", usage}
		}
		return usageError{"-config is required", usage}
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	logger := operationalLog(stderr)
	if *check {
		if err := daemon.Check(cfg, logger); err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		fmt.Fprintln(stdout, "configuration OK")
		return nil
	}
	return serve(cfg, daemon.Options{ConfigPath: *configPath, Logger: logger})
}

// auditSubcommands are the commands under `popproxy audit`.
var auditSubcommands = []string{"verify", "report"}

// auditSubcommand is `popproxy audit SUBCOMMAND`: it answers help and
// unknown subcommands, and leaves the rest to auditCommand.
func auditSubcommand(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return usageError{"audit needs a subcommand", auditUsage + "\n"}
	case slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]):
		fmt.Fprintln(stdout, auditUsage)
		return flag.ErrHelp
	case !slices.Contains(auditSubcommands, args[0]):
		return usageError{fmt.Sprintf("unknown command %q", "audit "+args[0]), auditUsage + "\n"}
	}
	return auditCommand(args, stdout, stderr)
}

// exitCode is an exit status whose message has already been printed.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// helpCommand is `popproxy help [COMMAND]`.
func helpCommand(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, usage)
		return nil
	case len(args) > 1:
		return usageError{fmt.Sprintf("unexpected argument %q", args[1]), usage}
	case args[0] == "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	if status := cli([]string{args[0], "-h"}, stdout, stderr); status != 0 {
		return exitCode(status)
	}
	return nil
}

// operationalLog is the log of what popproxy does (not the audit trail):
// JSON lines on w.
func operationalLog(w io.Writer) *slog.Logger {
	return slog.New(zerolog.NewSlogHandler(zerolog.New(w).With().Timestamp().Logger()))
}
