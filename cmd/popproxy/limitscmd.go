package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/daemon"
	"github.com/popproxy/popproxy/internal/sharedlimits"
)

const limitsUsage = `usage:
  popproxy limits show -config FILE USER|ADDRESS    print what the fleet's store holds on a user or an address
  popproxy limits clear -config FILE USER|ADDRESS   forget its failed logins, block and LOGIN-DELAY

Both work on the store of limits.shared in FILE. A USER is looked up as the
routes send it upstream and under its own name on every upstream; an ADDRESS
is grouped by limits.ipv6_prefix as the proxy counts it.`

// adminTimeout bounds the store's answers to an operator, who can wait
// longer than a login.
const adminTimeout = 5 * time.Second

// limitsCommand is `popproxy limits show|clear -config FILE USER|ADDRESS`.
func limitsCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"limits needs a subcommand", limitsUsage + "\n"}
	}
	sub := args[0]
	switch sub {
	case "show", "clear":
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, limitsUsage)
		return flag.ErrHelp
	default:
		return usageError{fmt.Sprintf("unknown command %q", "limits "+sub), limitsUsage + "\n"}
	}
	fs := flag.NewFlagSet("limits "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "configuration `FILE` (YAML)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, limitsUsage)
			return err
		}
		return usageError{err.Error(), limitsUsage + "\n"}
	}
	if *configPath == "" || fs.NArg() != 1 {
		return usageError{"limits " + sub + " needs -config FILE and one USER or ADDRESS", limitsUsage + "\n"}
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if cfg.Limits.Shared == nil {
		return fmt.Errorf("%s: limits.shared is not set: each instance keeps its own limits, which this command cannot reach yet", *configPath)
	}
	sc, err := daemon.SharedConfig(cfg.Limits.Shared)
	if err != nil {
		return err
	}
	sc.Timeout = max(sc.Timeout, adminTimeout)
	keys, err := daemon.SharedKeys(cfg, fs.Arg(0))
	if err != nil {
		return err
	}
	st := sharedlimits.New(sc, operationalLog(stderr))
	defer st.Close()
	ctx := context.Background()
	for _, key := range keys {
		if sub == "clear" {
			if err := st.Clear(ctx, key); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "cleared", key)
			continue
		}
		s, err := st.Show(ctx, key)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s failures=%d blocked=%s sessions=%d login_delay=%s\n", key, s.Failures,
			s.Blocked.Round(time.Second), s.Sessions, s.LoginDelay.Round(time.Second))
	}
	return nil
}
