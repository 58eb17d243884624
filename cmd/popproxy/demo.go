package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/daemon"
	"github.com/popproxy/popproxy/internal/maildrop"
)

// Demo credentials, printed for the user.
const (
	demoUser     = "demo"
	demoPassword = "demo"
)

// demoGrace is the demo's shutdown grace: nobody waits 30 s for a demo.
const demoGrace = 2 * time.Second

// demoCommand starts the embedded sample mail drop on loopback and the proxy
// in front of it, with a plain/STLS listener and an implicit-TLS one using a
// generated self-signed certificate, prints how to connect, and writes audit
// events to stdout. An address given on the command line is used or the demo
// fails; a default one that is busy is replaced by a free port.
func demoCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:1110", "POP3 (STLS offered) `ADDR`; by default a free port if 1110 is busy")
	listenTLS := fs.String("listen-tls", "127.0.0.1:1995", "POP3S (implicit TLS) `ADDR`; by default a free port if 1995 is busy")
	if err := parseFlags(fs, args, "usage: popproxy demo [-listen ADDR] [-listen-tls ADDR]\n", stdout); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !given["listen"] {
		*listen = freeOr(*listen)
	}
	if !given["listen-tls"] {
		*listenTLS = freeOr(*listenTLS)
	}

	dropListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	drop := maildrop.New(map[string]string{demoUser: demoPassword}, maildrop.Sample())
	go drop.Serve(dropListener)
	defer drop.Close()

	optional := false
	cfg := config.Default()
	cfg.Listeners = []config.Listener{
		{Name: "pop3", Address: *listen, TLS: config.TLSStartTLS, RequireTLS: &optional},
		{Name: "pop3s", Address: *listenTLS, TLS: config.TLSImplicit, RequireTLS: &optional},
	}
	cfg.Timeouts.ShutdownGrace = demoGrace
	cfg.TLS.SelfSigned = []string{"localhost", "127.0.0.1"}
	cfg.Upstream.Address = dropListener.Addr().String()
	cfg.Upstream.AllowPlaintextUpstream = true // the mail drop is on loopback
	if err := cfg.Complete(); err != nil {
		return err
	}
	sig := daemon.NotifySignals()
	defer sig.Stop()
	d, err := daemon.New(&cfg, daemon.Options{Logger: operationalLog(stderr)})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	plain, implicit := d.Addrs()[0].String(), d.Addrs()[1].String()
	fmt.Fprintf(stderr, `
popproxy demo: a sample mail drop at %[1]s, popproxy in front of it at %[2]s.
Implicit TLS (self-signed certificate) at %[3]s.
Audit events are printed below as JSON lines. Try:

  curl pop3://%[4]s:%[5]s@%[2]s/                  # list messages
  curl pop3://%[4]s:%[5]s@%[2]s/1                 # fetch message 1
  curl -k --ssl-reqd pop3://%[4]s:%[5]s@%[2]s/2   # STLS
  curl -k pop3s://%[4]s:%[5]s@%[3]s/3             # implicit TLS
  python3 -c 'import poplib; p=poplib.POP3("%[6]s", %[7]s); p.user("%[4]s"); p.pass_("%[5]s"); print(p.stat()); p.quit()'

Press Ctrl-C to stop.

`, dropListener.Addr().String(), plain, implicit, demoUser, demoPassword, hostOf(plain), portOf(plain))
	if err := sig.Run(d); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// freeOr returns addr if it can be bound now, else a free loopback port.
func freeOr(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	l.Close()
	return addr
}

func hostOf(addr string) string { h, _, _ := net.SplitHostPort(addr); return h }
func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
