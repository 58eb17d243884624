package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/popproxy/popproxy/examples/maildrop"
	"github.com/popproxy/popproxy/internal/config"
)

// Demo credentials, printed for the user.
const (
	demoUser     = "demo"
	demoPassword = "demo"
)

// demo starts the embedded sample mail drop on loopback and the proxy in front
// of it, prints how to connect, and writes audit events to stdout.
func demo(args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:1110", "proxy `address`; if busy, a free loopback port is used")
	fs.Parse(args)

	dropListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	drop := maildrop.New(map[string]string{demoUser: demoPassword}, maildrop.Sample())
	go drop.Serve(dropListener)
	defer drop.Close()

	address := *listen
	if l, err := net.Listen("tcp", address); err != nil {
		address = "127.0.0.1:0"
	} else {
		l.Close()
	}
	cfg := config.Default()
	cfg.Listeners = []config.Listener{{Name: "demo", Address: address, TLS: config.TLSNone}}
	cfg.Upstream.Address = dropListener.Addr().String()
	if err := cfg.Validate(); err != nil {
		return err
	}
	return run(&cfg, logger, func(ls []net.Listener) {
		addr := ls[0].Addr().String()
		fmt.Fprintf(os.Stderr, `
popproxy demo: a sample mail drop at %s, popproxy in front of it at %s.
Audit events are printed below as JSON lines. Try:

  curl pop3://%s:%s@%s/            # list messages
  curl pop3://%s:%s@%s/1           # fetch message 1
  python3 -c 'import poplib; p=poplib.POP3("%s", %s); p.user("%s"); p.pass_("%s"); print(p.stat()); p.quit()'

Press Ctrl-C to stop.

`, cfg.Upstream.Address, addr, demoUser, demoPassword, addr, demoUser, demoPassword, addr,
			hostOf(addr), portOf(addr), demoUser, demoPassword)
	})
}

func hostOf(addr string) string { h, _, _ := net.SplitHostPort(addr); return h }
func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
