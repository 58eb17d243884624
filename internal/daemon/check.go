package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/config"
	"github.com/popproxy/popproxy/tlsconf"
)

// Check is popproxy -check: everything New does, except
// binding the ports and, with ACME, asking the CA for certificates. It reads
// every file the configuration names (upstream CA files and client
// certificates, the map file, the listeners' certificates and keys, the ACME
// trusted roots), checks that the ACME storage folder and the audit file
// can be written, and resolves the listeners' addresses. It reports every
// part that fails and leaves nothing behind.
func Check(cfg *config.Config, logger *slog.Logger) error {
	var errs []string
	fail := func(field string, err error) {
		switch {
		case err == nil:
		case field == "": // the error names its part
			errs = append(errs, err.Error())
		default:
			errs = append(errs, field+": "+err.Error())
		}
	}
	for i, l := range cfg.Listeners {
		_, err := net.ResolveTCPAddr("tcp", l.Address)
		fail(fmt.Sprintf("listeners[%d].address", i), err)
	}
	if cfg.Admin.Address != "" {
		_, err := net.ResolveTCPAddr("tcp", cfg.Admin.Address)
		fail("admin.address", err)
	}
	// The upstreams' TLS files, the routes and the map file, the limits:
	// built as New builds them.
	_, err := serverOptions(cfg, nil, logger)
	fail("", err)
	if cfg.Limits.Shared != nil {
		_, err := SharedConfig(cfg.Limits.Shared)
		fail("", err)
	}
	if cfg.UsesTLS() {
		fail("tls", tlsconf.Check(serverTLS(cfg), logger))
	}
	fail("audit.output", checkAudit(cfg.Audit))
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errors.New(errs[0])
	}
	return fmt.Errorf("%d problems:\n  %s", len(errs), strings.Join(errs, "\n  "))
}

// checkAudit opens the audit destination as openAudit would, and closes it;
// a file is left as it was.
func checkAudit(cfg config.Audit) error {
	switch cfg.Output {
	case "stdout":
		return nil
	case "syslog":
		l, err := audit.OpenSyslog("popproxy", audit.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		return l.Close()
	}
	return audit.CheckFile(cfg.Output)
}
