// Package maildrop is a tiny in-memory POP3 server (RFC 1939, with CAPA from
// RFC 2449) holding a few sample messages. popproxy's demo puts the proxy in
// front of it.
//
// It is meant as a readable example and a test backend, not for production:
// mailboxes live in memory and passwords are compared in plain text.
//
// Typical usage:
//
//	srv := maildrop.New(map[string]string{"demo": "demo"}, maildrop.Sample())
//	l, err := net.Listen("tcp", "127.0.0.1:0")
//	if err != nil {
//		return err
//	}
//	go srv.Serve(l)
//	defer srv.Close()
//	// point a POP3 client (or popproxy) at l.Addr()
package maildrop

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sync"
	"time"
)

// Message is one message in a mailbox: the raw RFC 5322 text with CRLF line
// endings. Its size in STAT and LIST is len(Data).
type Message struct {
	Data []byte
}

// RFC 1939 §3: the autologout timer is at least 10 minutes; before login a
// much shorter wait is enough.
const (
	defaultAuthTimeout = 60 * time.Second
	defaultIdleTimeout = 10 * time.Minute
)

// Server serves one shared mailbox per user. Deletions are committed only
// when a session's QUIT enters UPDATE (RFC 1939 §6); a session that ends
// otherwise commits nothing. Only one session at a time may hold a mailbox: a
// second concurrent login gets "-ERR [IN-USE] mailbox locked".
//
// A Server must be created with New. Its methods are safe for concurrent use.
type Server struct {
	users map[string]string // user -> password; read-only after New

	// Idle limits before and after login; tests shorten them.
	authTimeout time.Duration
	idleTimeout time.Duration

	mu        sync.Mutex
	boxes     map[string]*mailbox
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup // running Serve loops and sessions
}

// mailbox is one user's committed messages. Its fields are guarded by
// Server.mu.
type mailbox struct {
	msgs   []*message
	locked bool // a session is in the TRANSACTION state on this mailbox
}

// message is an immutable stored message; mailboxes and sessions share it.
type message struct {
	data []byte
	uid  string
}

// New returns a server with the given users (user -> password), each holding
// a copy of msgs. Bare LF line endings in msgs are turned into CRLF, and a
// final CRLF is added if missing. If users is empty, every login fails.
func New(users map[string]string, msgs []Message) *Server {
	stored := make([]*message, len(msgs))
	for i, m := range msgs {
		data := normalize(m.Data)
		stored[i] = &message{data: data, uid: uid(data, i+1)}
	}
	srv := &Server{
		users:       make(map[string]string, len(users)),
		authTimeout: defaultAuthTimeout,
		idleTimeout: defaultIdleTimeout,
		boxes:       make(map[string]*mailbox, len(users)),
		listeners:   make(map[net.Listener]struct{}),
		conns:       make(map[net.Conn]struct{}),
	}
	for user, pass := range users {
		srv.users[user] = pass
		srv.boxes[user] = &mailbox{msgs: append([]*message(nil), stored...)}
	}
	return srv
}

// uid returns the unique-id of the n-th message: the hex of the first 8
// bytes of the SHA-256 of its content, then its position when the mailbox
// was created. RFC 1939 §7: 1 to 70 characters in 0x21-0x7E, and it never
// changes between sessions.
func uid(data []byte, n int) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%x-%d", sum[:8], n)
}

// normalize returns a copy of data with every bare LF turned into CRLF and
// a CRLF at the end of a non-empty message.
func normalize(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(data)/32+2)
	for i, b := range data {
		if b == '\n' && (i == 0 || data[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

//go:embed messages/*.eml
var sampleFS embed.FS

// Sample returns the demo's four messages, in file-name order, from the
// embedded messages/*.eml: a welcome note, a message with dot lines that
// need dot-stuffing, an 8-bit UTF-8 message and a ~20 KB message with a
// base64 attachment. Each call returns fresh copies.
func Sample() []Message {
	names, err := fs.Glob(sampleFS, "messages/*.eml") // sorted
	if err != nil {
		panic(err) // the pattern is a constant
	}
	msgs := make([]Message, 0, len(names))
	for _, name := range names {
		data, err := sampleFS.ReadFile(name)
		if err != nil {
			panic(err) // embedded files are always readable
		}
		// Normalise in case a checkout rewrote the CRLF endings.
		msgs = append(msgs, Message{Data: normalize(data)})
	}
	return msgs
}

// Serve accepts connections on l and serves each in its own goroutine until
// l is closed or Close is called. It then returns nil; any other accept
// error is returned. Serve closes l before returning.
func (srv *Server) Serve(l net.Listener) error {
	defer l.Close()
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.listeners[l] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()
	defer srv.wg.Done()
	defer srv.forgetListener(l)

	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || srv.isClosed() {
				return nil
			}
			return fmt.Errorf("maildrop: accept: %w", err)
		}
		if !srv.trackConn(c) {
			c.Close()
			return nil
		}
		go srv.serveConn(c)
	}
}

// Close stops every Serve loop, closes all open sessions without committing
// their deletions, and waits for their goroutines to exit. Closing twice is
// harmless.
func (srv *Server) Close() error {
	var err error
	srv.mu.Lock()
	srv.closed = true
	for l := range srv.listeners {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("maildrop: close listener: %w", cerr)
		}
	}
	for c := range srv.conns {
		c.Close()
	}
	srv.mu.Unlock()
	srv.wg.Wait()
	return err
}

func (srv *Server) isClosed() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closed
}

func (srv *Server) forgetListener(l net.Listener) {
	srv.mu.Lock()
	delete(srv.listeners, l)
	srv.mu.Unlock()
}

// trackConn registers c for Close and counts its session in wg. It reports
// false if the server is already closed.
func (srv *Server) trackConn(c net.Conn) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closed {
		return false
	}
	srv.conns[c] = struct{}{}
	srv.wg.Add(1)
	return true
}

func (srv *Server) forgetConn(c net.Conn) {
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
}
