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
	"github.com/popproxy/popproxy/proxy"
)

const limitsUsage = `usage:
  popproxy limits show -config FILE USER|ADDRESS    print what the limits hold on a user or an address
  popproxy limits clear -config FILE USER|ADDRESS   forget its failed logins, block and LOGIN-DELAY
  popproxy limits -admin HOST:PORT show|clear USER|ADDRESS

With limits.shared in FILE, both work on the fleet's store. Without it, or
with -admin, they work on one instance's own limits through its admin
listener (admin.address in FILE), which answers loopback only. A USER is
looked up as the routes send it upstream and under its own name on every
upstream; an ADDRESS is grouped by limits.ipv6_prefix as the proxy counts it.`

// adminTimeout bounds the store's answers to an operator, who can wait
// longer than a login.
const adminTimeout = 5 * time.Second

// limitsCommand is `popproxy limits show|clear -config FILE USER|ADDRESS`,
// or with -admin HOST:PORT instead of -config, before or after show|clear.
func limitsCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("limits", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "configuration `FILE` (YAML)")
	adminAddr := fs.String("admin", "", "an instance's admin listener `HOST:PORT`")
	parse := func(args []string) error {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, limitsUsage)
			return err
		}
		if err != nil {
			return usageError{err.Error(), limitsUsage + "\n"}
		}
		return nil
	}
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"limits needs a subcommand", limitsUsage + "\n"}
	}
	sub := fs.Arg(0)
	switch sub {
	case "show", "clear":
	case "help":
		fmt.Fprintln(stdout, limitsUsage)
		return flag.ErrHelp
	default:
		return usageError{fmt.Sprintf("unknown command %q", "limits "+sub), limitsUsage + "\n"}
	}
	if err := parse(fs.Args()[1:]); err != nil {
		return err
	}
	if *configPath == "" && *adminAddr == "" || fs.NArg() != 1 {
		return usageError{"limits " + sub + " needs -config FILE or -admin HOST:PORT, and one USER or ADDRESS", limitsUsage + "\n"}
	}
	name := fs.Arg(0)
	if *adminAddr != "" {
		return adminLimits(*adminAddr, sub, name, stdout)
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if cfg.Limits.Shared == nil {
		if cfg.Admin.Address == "" {
			return fmt.Errorf("%s: neither limits.shared nor admin.address is set: no store or instance to ask", *configPath)
		}
		return adminLimits(cfg.Admin.Address, sub, name, stdout)
	}
	sc, err := daemon.SharedConfig(cfg.Limits.Shared)
	if err != nil {
		return err
	}
	sc.Timeout = max(sc.Timeout, adminTimeout)
	keys, err := daemon.SharedKeys(cfg, name)
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
		daemon.PrintLimitState(stdout, proxy.LimitState{Key: key, Failures: s.Failures, Blocked: s.Blocked, Sessions: s.Sessions, LoginDelay: s.LoginDelay})
	}
	return nil
}
