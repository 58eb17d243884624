package main

// nginx's mail proxy as a peer of popproxy in the plain comparisons (retr,
// noop, sessions): Debian's nginx-light with libnginx-mod-mail, run as a
// private process (its own prefix, config, pid and error log in the work
// folder), proxy on, no TLS. nginx asks an HTTP "auth_http" service where
// each login goes; popbench answers every request itself (authResponder)
// with Dovecot's plain port, and Dovecot checks the password. The number of
// requests is reported against the number of sessions opened through nginx,
// to show that every session went through it.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// nginxMailModule is where Debian's libnginx-mod-mail puts the module.
const nginxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"

// authResponder is nginx's auth_http service: every request is a login
// allowed to upstream.
type authResponder struct {
	upstream *net.TCPAddr
	requests atomic.Int64
	srv      *http.Server
	addr     string
}

// startAuthResponder serves auth_http on a free loopback port.
func startAuthResponder(upstream string) (*authResponder, error) {
	up, err := net.ResolveTCPAddr("tcp", upstream)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &authResponder{upstream: up, addr: l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/auth", a.auth)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go a.srv.Serve(l)
	return a, nil
}

// auth answers one auth_http request (nginx's ngx_mail_auth_http_module
// protocol): Auth-Status OK sends the login on to Auth-Server:Auth-Port.
func (a *authResponder) auth(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	h := w.Header()
	h.Set("Auth-Status", "OK")
	h.Set("Auth-Server", a.upstream.IP.String())
	h.Set("Auth-Port", strconv.Itoa(a.upstream.Port))
	w.WriteHeader(http.StatusOK)
}

func (a *authResponder) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
}

// nginxPeer is a running nginx mail proxy and its auth_http responder.
type nginxPeer struct {
	*child
	auth *authResponder
	// dials counts the connections opened through target.
	dials atomic.Int64
}

// startNginx runs nginx's mail proxy in front of upstream (Dovecot's plain
// port), privately under <work>/<name>/, in the foreground as a child like
// popproxy.
func startNginx(work, name, upstream string) (*nginxPeer, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errors.New("nginx not found: apt-get install -y nginx-light libnginx-mod-mail")
	}
	if _, err := os.Stat(nginxMailModule); err != nil {
		return nil, fmt.Errorf("nginx mail module: %w (apt-get install -y libnginx-mod-mail)", err)
	}
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	auth, err := startAuthResponder(upstream)
	if err != nil {
		return nil, err
	}
	errLog := filepath.Join(dir, "error.log")
	// The settings of the measurements in ../shared/research/peers-bench.md:
	// as many workers as CPUs, room for the idle sessions' descriptors.
	conf := fmt.Sprintf(`load_module %s;
daemon off;
worker_processes auto;
worker_rlimit_nofile 20000;
pid %s;
error_log %s warn;
events { worker_connections 10000; }
mail {
	proxy on;
	pop3_auth plain;
	pop3_capabilities "TOP" "USER" "UIDL";
	auth_http %s/auth;
	server {
		listen %s;
		protocol pop3;
	}
}
`, nginxMailModule, filepath.Join(dir, "nginx.pid"), errLog, auth.addr, addr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		auth.close()
		return nil, err
	}
	p, err := startChild(work, name, addr, "", nil, bin, "-p", dir, "-c", confPath, "-e", errLog)
	if err != nil {
		auth.close()
		return nil, fmt.Errorf("%w (error log %s)", err, errLog)
	}
	return &nginxPeer{child: p, auth: auth}, nil
}

// target returns nginx as a target called name whose CPU time is nginx's
// (master and workers) plus upstream's, counting the connections opened.
func (n *nginxPeer) target(name string, upstream target) target {
	t := hopTarget(n.child.tcp(name, upstream), upstream, func() (time.Duration, error) { return treeCPU(n.pid()) })
	dial := t.dial
	t.dial = func() (net.Conn, error) {
		n.dials.Add(1)
		return dial()
	}
	return t
}

// note says how many logins nginx asked auth_http about, against the
// sessions opened through it; every session logs in once.
func (n *nginxPeer) note() string {
	return fmt.Sprintf("nginx mail: %d auth_http requests for %d sessions opened through it",
		n.auth.requests.Load(), n.dials.Load())
}

// stop stops nginx, then the auth_http responder.
func (n *nginxPeer) stop() error {
	err := n.child.stop()
	if aerr := n.auth.close(); err == nil {
		err = aerr
	}
	return err
}
