package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
)

// Shape of the generated mailbox.
const (
	minText    = 2 << 10  // smallest text message
	maxText    = 50 << 10 // largest text message
	minLarge   = 1 << 20  // smallest message with an attachment
	maxLarge   = 10 << 20 // largest message with an attachment
	largeEvery = 250      // one message in largeEvery has an attachment
	lightCount = 5        // messages of userLight
)

// mailbox is what was stored for a user and what RETR must return.
type mailbox struct {
	want  []int64 // RETR body octets of message i+1 on the wire, see wireSize
	bytes int64   // stored size
}

// fillMailbox stores messages of user until they total size bytes.
func fillMailbox(dc *testdovecot.Instance, user string, size, seed int64) (mailbox, error) {
	var mb mailbox
	g := newMailGenerator(seed)
	for mb.bytes < size {
		msg := g.next()
		if err := add(dc, user, msg, &mb); err != nil {
			return mb, err
		}
	}
	return mb, nil
}

// fillLight gives userLight its few small messages, once.
func fillLight(dc *testdovecot.Instance, seed int64) error {
	if ids, err := dc.Messages(userLight); err != nil || len(ids) > 0 {
		return err
	}
	g := newMailGenerator(seed + 1)
	var mb mailbox
	for i := 0; i < lightCount; i++ {
		if err := add(dc, userLight, g.text(minText+g.rnd.Intn(8<<10)), &mb); err != nil {
			return err
		}
	}
	return nil
}

// fillSlow gives userSlow its one message of about size bytes and returns
// its RETR body octets.
func fillSlow(dc *testdovecot.Instance, size, seed int64) (int64, error) {
	g := newMailGenerator(seed + 2)
	var mb mailbox
	if err := add(dc, userSlow, g.large(int(size)), &mb); err != nil {
		return 0, err
	}
	return mb.want[0], nil
}

func add(dc *testdovecot.Instance, user string, msg []byte, mb *mailbox) error {
	if _, err := dc.AddMessage(user, msg); err != nil {
		return err
	}
	mb.want = append(mb.want, wireSize(msg))
	mb.bytes += int64(len(msg))
	return nil
}

// wireSize is the length of msg's RETR body on the wire: msg itself (its lines
// already end in CRLF), one octet more for each line that starts with "."
// (dot-stuffing, RFC 1939 §3), and the terminating ".\r\n".
func wireSize(msg []byte) int64 {
	n := int64(len(msg)) + 3 + int64(bytes.Count(msg, []byte("\n.")))
	if len(msg) > 0 && msg[0] == '.' {
		n++
	}
	return n
}

// mailGenerator writes a deterministic, plausible mailbox: mostly plain-text
// messages of 2–50 KiB with the usual headers, quoted replies and signatures,
// and one message in largeEvery of 1–10 MiB carrying a base64 attachment in
// 76-character lines. Lines end in CRLF; some start with "." so that the
// server has to dot-stuff them.
type mailGenerator struct {
	rnd  *rand.Rand
	n    int       // messages generated
	date time.Time // of the next message
	buf  []byte    // the message being written; reused
}

func newMailGenerator(seed int64) *mailGenerator {
	return &mailGenerator{
		rnd:  rand.New(rand.NewSource(seed)),
		date: time.Date(2024, 3, 1, 8, 0, 0, 0, time.UTC),
	}
}

// next returns the next message. It is valid until the next call.
func (g *mailGenerator) next() []byte {
	if g.n%largeEvery == largeEvery/2 {
		return g.large(minLarge + g.rnd.Intn(maxLarge-minLarge))
	}
	return g.text(minText + g.rnd.Intn(maxText-minText))
}

// text returns a text/plain message of about size bytes.
func (g *mailGenerator) text(size int) []byte {
	g.header("text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit")
	for len(g.buf) < size-200 {
		g.paragraph()
	}
	g.signature()
	return g.buf
}

// large returns a multipart message of about size bytes: a short note and an
// attachment of random (incompressible, like a PDF or JPEG) bytes.
func (g *mailGenerator) large(size int) []byte {
	boundary := fmt.Sprintf("=_part_%08x", g.rnd.Uint32())
	g.header(`multipart/mixed; boundary="` + boundary + `"`)
	g.line("This is a multi-part message in MIME format.")
	g.line("")
	g.line("--" + boundary)
	g.line("Content-Type: text/plain; charset=utf-8")
	g.line("")
	g.paragraph()
	g.signature()
	name := fmt.Sprintf("scan-%05d.pdf", g.n)
	g.line("--" + boundary)
	g.line(`Content-Type: application/pdf; name="` + name + `"`)
	g.line(`Content-Disposition: attachment; filename="` + name + `"`)
	g.line("Content-Transfer-Encoding: base64")
	g.line("")
	// 57 raw bytes make one 76-character line plus CRLF.
	lines := max((size-len(g.buf)-len(boundary)-8)/78, 1)
	raw := make([]byte, 57*lines)
	g.rnd.Read(raw)
	for i := 0; i < len(raw); i += 57 {
		g.buf = base64.StdEncoding.AppendEncode(g.buf, raw[i:i+57])
		g.buf = append(g.buf, "\r\n"...)
	}
	g.line("--" + boundary + "--")
	return g.buf
}

// header starts a new message with the usual headers.
func (g *mailGenerator) header(contentType string) {
	g.n++
	g.buf = g.buf[:0]
	from := people[g.rnd.Intn(len(people))]
	date := g.date.Format(time.RFC1123Z)
	g.date = g.date.Add(time.Duration(1+g.rnd.Intn(240)) * time.Minute)
	id := fmt.Sprintf("<%016x.%d@%s>", g.rnd.Uint64(), g.n, from.domain)
	g.line("Return-Path: <" + from.addr() + ">")
	g.line("Received: from mx" + fmt.Sprint(1+g.rnd.Intn(4)) + "." + from.domain +
		" (mx." + from.domain + " [192.0.2." + fmt.Sprint(1+g.rnd.Intn(250)) + "])")
	g.line("\tby mail.example.org (Postfix) with ESMTPS id " + fmt.Sprintf("%X", g.rnd.Uint32()))
	g.line("\tfor <bench@example.org>; " + date)
	g.line("Message-ID: " + id)
	g.line("Date: " + date)
	g.line("From: " + from.name + " <" + from.addr() + ">")
	g.line("To: Bench User <bench@example.org>")
	g.line("Subject: " + g.words(3+g.rnd.Intn(6)))
	g.line("MIME-Version: 1.0")
	g.line("Content-Type: " + contentType)
	g.line("")
}

// paragraph writes a few lines of text, now and then quoted or starting with
// a ".", then a blank line.
func (g *mailGenerator) paragraph() {
	prefix := ""
	if g.rnd.Intn(5) == 0 {
		prefix = "> "
	}
	for i, n := 0, 2+g.rnd.Intn(7); i < n; i++ {
		if g.rnd.Intn(30) == 0 {
			// Lines the server must dot-stuff, "." alone among them.
			g.line(dotLines[g.rnd.Intn(len(dotLines))])
			continue
		}
		g.line(prefix + g.wrapped(60+g.rnd.Intn(16)))
	}
	g.line("")
}

// wrapped returns random words up to about width characters, like a line
// of text wrapped by a mail client.
func (g *mailGenerator) wrapped(width int) string {
	var b []byte
	for len(b) < width-8 {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, vocabulary[g.rnd.Intn(len(vocabulary))]...)
	}
	return string(b)
}

func (g *mailGenerator) signature() {
	from := people[g.rnd.Intn(len(people))]
	g.line("-- ")
	g.line(from.name)
}

// words returns n random words separated by spaces.
func (g *mailGenerator) words(n int) string {
	var b []byte
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, vocabulary[g.rnd.Intn(len(vocabulary))]...)
	}
	return string(b)
}

func (g *mailGenerator) line(s string) {
	g.buf = append(g.buf, s...)
	g.buf = append(g.buf, "\r\n"...)
}

type person struct{ name, user, domain string }

func (p person) addr() string { return p.user + "@" + p.domain }

var people = []person{
	{"Alice Martin", "alice", "example.com"},
	{"Bob Nguyen", "bob.nguyen", "example.net"},
	{"Chloé Dubois", "chloe", "mail.example.fr"},
	{"Dmitri Volkov", "dvolkov", "example.org"},
	{"Eve Okafor", "eve", "corp.example.com"},
	{"Farid Haddad", "f.haddad", "example.net"},
	{"Greta Lindqvist", "greta", "example.se"},
	{"Hiro Tanaka", "tanaka", "example.jp"},
	{"Build Bot", "noreply", "ci.example.com"},
	{"Newsletter", "news", "lists.example.com"},
}

var dotLines = []string{".", "..", ". indented item", ".hidden-file", "...and so on", ".\t."}

var vocabulary = []string{
	"the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with",
	"be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
	"but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we",
	"meeting", "report", "invoice", "attached", "please", "review", "thanks", "regards",
	"schedule", "project", "deadline", "budget", "server", "mailbox", "proxy", "update",
	"release", "customer", "contract", "draft", "quarterly", "results", "tomorrow",
	"Monday", "Friday", "agenda", "minutes", "question", "answer", "issue", "ticket",
	"deployment", "migration", "password", "account", "storage", "network", "latency",
	"throughput", "benchmark", "configuration", "certificate", "renewal", "holiday",
	"lunch", "office", "team", "colleague", "feedback", "proposal", "approval", "status",
	"café", "naïve", "résumé", "Zürich", "São", "Paulo", "€100", "100%", "e-mail",
	"https://example.com/docs", "#1234", "v2.3.19", "(see", "below)", "—", "“quoted”",
}
