package testdovecot

import (
	_ "embed"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/template"

	"github.com/popproxy/popproxy/internal/testproc"
)

//go:embed dovecot.conf.tmpl
var confText string

var confTemplate = template.Must(template.New("dovecot.conf").Parse(confText))

// prepare makes Dir and the folders in it, and writes what does not depend
// on the ports: the passwd-file, the maildirs and the oauth2 settings.
func (d *Instance) prepare() error {
	if d.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "popdc")
		if err != nil {
			return err
		}
		d.cfg.Dir, d.ownDir = dir, true
	}
	// Dovecot's login and auth processes run as other users and must
	// traverse these; MkdirTemp makes 0700.
	for _, sub := range []string{"", "run", "state", "mail"} {
		p := filepath.Join(d.cfg.Dir, sub)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return err
		}
	}
	var err error
	if d.uid, d.gid, err = mailIdentity(); err != nil {
		return err
	}
	if err := d.writeUsers(); err != nil || d.cfg.OAuth2IntrospectionURL == "" {
		return err
	}
	// Dovecot 2.3's oauth2 passdb reads its settings from a file of its own.
	oauth2 := "introspection_mode = post\n" +
		"introspection_url = " + d.cfg.OAuth2IntrospectionURL + "\n" +
		"force_introspection = yes\n" +
		"username_attribute = username\n" +
		"active_attribute = active\n" +
		"active_value = true\n"
	return os.WriteFile(filepath.Join(d.cfg.Dir, "dovecot-oauth2.conf.ext"), []byte(oauth2), 0o644)
}

// confData fills dovecot.conf.tmpl.
type confData struct {
	Config
	Ports                 ports
	LoginUser, LoginGroup string // when not root: whom everything runs as
	UID, GID              int
	ProcessLimit          int
	ClientLimit           int
	LoginProcesses        int
}

// configure chooses free ports for the listeners the Config asks for and
// writes the configuration for them.
func (d *Instance) configure() error {
	var err error
	d.ports = ports{}
	if d.ports.Plain, err = testproc.FreePort(); err != nil {
		return err
	}
	if d.cfg.TLSCert != "" {
		if d.ports.TLS, err = testproc.FreePort(); err != nil {
			return err
		}
	}
	if d.cfg.HAProxy {
		if d.ports.HAProxy, err = testproc.FreePort(); err != nil {
			return err
		}
	}

	data := confData{
		Config: d.cfg,
		Ports:  d.ports,
		UID:    d.uid,
		GID:    d.gid,
		// One pop3 process per session, plus some slack.
		ProcessLimit: d.cfg.MaxConnections + 100,
		// Each session is a client of pop3-login, anvil, log, ...
		ClientLimit:    2*d.cfg.MaxConnections + 100,
		LoginProcesses: min(runtime.NumCPU(), 4),
	}
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return err
		}
		g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
		if err != nil {
			return err
		}
		data.LoginUser, data.LoginGroup = u.Username, g.Name
	}
	var conf strings.Builder
	if err := confTemplate.Execute(&conf, data); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.cfg.Dir, "dovecot.conf"), []byte(conf.String()), 0o644)
}
