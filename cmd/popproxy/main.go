// Command popproxy is a POP3 proxy: it terminates clients' connections,
// handles their login, relays every command to the upstream server after
// checking it, and writes an audit trail of mailbox access.
//
// Usage:
//
//	popproxy [run] -config FILE          run
//	popproxy [run] -config FILE -check   check the configuration and every file it names, and exit
//	popproxy demo                        run against an embedded sample mail drop
//	popproxy audit verify FILE...        check the hash chain of audit files, oldest first
//	popproxy audit report FILE...        summarise audit files per user
//	popproxy limits show|clear -config FILE USER|ADDRESS
//	                                     show or clear fleet-wide limits in the shared store
//	popproxy version                     print the version and build information
//	popproxy help [COMMAND]              print the usage
//
// The process itself (listeners, reloads, shutdown) is internal/daemon; this
// package holds the command line.
package main

import (
	"os"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/internal/daemon"
)

func main() {
	audit.SetGlobals()
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// serve runs a daemon for cfg until SIGINT or SIGTERM, reloading on SIGHUP
// (see daemon.Signals).
func serve(cfg *config.Config, opts daemon.Options) error {
	sig := daemon.NotifySignals()
	defer sig.Stop()
	d, err := daemon.New(cfg, opts)
	if err != nil {
		return err
	}
	return sig.Run(d)
}
