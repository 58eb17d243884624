package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
)

// Values of the "chain" field, on the first record of a chain or of a file.
const (
	chainStart     = "start"     // a new chain: seq 1, prev ""
	chainContinued = "continued" // prev is the last record of an earlier file or run
)

// sink is the writer under the zerolog logger. It receives one whole record
// per Write, serialises the writes, adds the hash chain, and keeps track of
// failures. It never returns an error to zerolog, which would print one line
// to stderr per lost record.
type sink struct {
	name         string // what the operational log calls the sink: its path, "syslog" or "writer"
	path         string // for Reopen; "" if not a file
	chain        bool
	log          *slog.Logger
	headInterval time.Duration
	stop         chan struct{} // closed by close, ends logHeads

	mu      sync.Mutex
	w       io.Writer
	c       io.Closer // nil for New's writer, which belongs to the caller
	closed  bool
	buf     []byte
	partial bool   // the destination ends in the middle of a line
	seq     uint64 // of the last record, written or lost
	prev    string // hex SHA-256 of the last record written
	mark    string // chain field of the next record, if any
	// pending is a chain.start record to write before the next one, which
	// begins a new segment of the chain in a file whose end was damaged.
	pending  []byte
	err      error // of the last write, if it failed
	failures int64
	streak   int64  // failures since the last success
	used     bool   // a record was written or lost since the sink was opened
	reported uint64 // the seq of the head last written to the operational log
}

func newSink(w io.Writer, name string, opts Options) *sink {
	s := &sink{w: w, name: name, chain: opts.Chain, log: opts.Logger, headInterval: opts.HeadInterval, stop: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.chain {
		s.mark = chainStart
	}
	return s
}

// Write writes the record p, one zerolog event ending in "}\n". With the chain
// on, it inserts `,"seq":N,"prev":"…"` (and the chain marker, if due) before
// the final "}", after a pending chain.start record, written with it.
func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used = true
	b := s.buf[:0]
	if s.partial {
		// Leave the fragment of a failed write on a line of its own.
		b = append(b, '\n')
	}
	if len(p)+maxChainFields > MaxRecord {
		p = tooLarge(p)
	}
	prev := s.prev
	if s.chain && bytes.HasSuffix(p, []byte("}\n")) {
		mark := s.mark
		if s.pending != nil {
			b, prev = s.appendChained(b, s.pending, prev, mark)
			mark = ""
		}
		b, prev = s.appendChained(b, p, prev, mark)
	} else {
		b = append(b, p...)
	}
	s.buf = b

	var n int
	err := ErrClosed
	if !s.closed {
		n, err = s.w.Write(b)
	}
	if n > 0 {
		s.partial = b[n-1] != '\n'
	}
	if err == nil && s.chain {
		s.prev, s.mark, s.pending = prev, "", nil
	}
	s.account(err)
	return len(p), nil
}

// appendChained appends the record rec with the chain's fields: the next
// seq, prev and, if not empty, the chain marker. It returns the hex SHA-256
// of the line, the prev of the record after it.
func (s *sink) appendChained(b, rec []byte, prev, mark string) ([]byte, string) {
	s.seq++
	start := len(b)
	b = append(b, rec[:len(rec)-2]...)
	b = append(b, `,"`+keySeq+`":`...)
	b = strconv.AppendUint(b, s.seq, 10)
	b = append(b, `,"`+keyPrev+`":"`...)
	b = append(b, prev...)
	b = append(b, '"')
	if mark != "" {
		b = append(b, `,"`+keyChain+`":"`...)
		b = append(b, mark...)
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	sum := sha256.Sum256(b[start : len(b)-1])
	return b, hex.EncodeToString(sum[:])
}

// maxChainFields is the most the chain adds to a record:
// ,"seq":N,"prev":"<64 hex digits>","chain":"continued".
const maxChainFields = 128

// tooLargeStart is how much of a record longer than MaxRecord its stand-in
// keeps: enough for its time, event and session.
const tooLargeStart = 512

// tooLarge returns the record that stands in for p, which is longer than
// MaxRecord: its size and its start. No event popproxy records comes near
// the bound, so only configured names of absurd length can cause this.
func tooLarge(p []byte) []byte {
	start, _ := json.Marshal(string(p[:min(len(p), tooLargeStart)]))
	return fmt.Appendf(nil, `{"%s":"%s","%s":"%s","%s":"","%s":%d,"%s":%s}`+"\n",
		keyTime, now(), keyEvent, EventTooLarge, keySession, keySize, len(p), keyStart, start)
}

// chainStartRecord is the chain.start record that begins a new segment of
// the chain after the damaged end of a file: what was found there, and the
// last whole chained record before it, if any.
func chainStartRecord(end fileEnd) []byte {
	found, _ := json.Marshal(end.damage)
	b := fmt.Appendf(nil, `{"%s":"%s","%s":"%s","%s":"","%s":%s`,
		keyTime, now(), keyEvent, EventChainStart, keySession, keyFound, found)
	if end.hasLast {
		b = fmt.Appendf(b, `,"%s":%d,"%s":"%s"`, keyLastSeq, end.lastSeq, keyLastHash, end.lastHash)
	}
	return append(b, "}\n"...)
}

// fail records a record lost before it reached Write. Like a failed write,
// it uses a seq, so that the loss shows in the chain.
func (s *sink) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used = true
	if s.chain {
		s.seq++
	}
	s.account(err)
}

// account updates the failure state after a write, and tells the
// operational log when a streak of failures starts and ends.
func (s *sink) account(err error) {
	if err != nil {
		s.failures++
		s.streak++
		if s.err == nil {
			s.log.Error("audit sink failing: "+err.Error(), "sink", s.name)
		}
		s.err = err
		return
	}
	if s.err != nil {
		s.log.Info("audit sink recovered", "sink", s.name, "lost_records", s.streak)
		s.err, s.streak = nil, 0
	}
}

func (s *sink) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *sink) failureCount() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures
}

// reopen replaces a file sink's file with a fresh open of its path. The next
// record says the chain continues from the old file.
func (s *sink) reopen() error {
	if s.path == "" {
		return nil
	}
	f, err := openAppend(s.path)
	if err != nil {
		return fmt.Errorf("audit: reopen: %w", err)
	}
	end, err := readEnd(s.path)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: reopen: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		f.Close()
		return ErrClosed
	}
	old := s.c
	s.w, s.c, s.partial = f, f, end.partial > 0
	if s.chain && s.prev != "" {
		s.mark = chainContinued
	}
	s.logHead("audit log reopened")
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("audit: reopen: closing the old file: %w", err)
	}
	return nil
}

func (s *sink) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	c := s.c
	if s.used {
		s.logHead("audit log closed")
	}
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}

// logHead writes the chain's last seq and hash to the operational log, a
// copy kept outside the audit file against which its end can be checked.
func (s *sink) logHead(msg string) {
	s.reported = s.seq
	if s.chain {
		s.log.Info(msg, "sink", s.name, "seq", s.seq, "last_hash", s.prev)
	} else {
		s.log.Info(msg, "sink", s.name)
	}
}

// logHeads writes the chain's head to the operational log every
// headInterval, when it moved since it was last written, until the sink is
// closed.
func (s *sink) logHeads() {
	t := time.NewTicker(s.headInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			if s.seq != s.reported {
				s.logHead("audit chain head")
			}
			s.mu.Unlock()
		}
	}
}

// resume continues the chain of the file at s.path from its last record or,
// if its end is damaged (a record cut short by a crash or by truncation, a
// line that is not a chained record), starts a new segment with a
// chain.start record saying what it found.
func (s *sink) resume() error {
	end, err := readEnd(s.path)
	if err != nil {
		return err
	}
	s.partial = end.partial > 0
	switch {
	case !s.chain:
	case end.damage != "":
		s.pending = chainStartRecord(end)
		s.log.Warn("audit file ends damaged: a new chain segment starts", "sink", s.name,
			"found", end.damage, "last_seq", end.lastSeq, "last_hash", end.lastHash)
	case end.hasLast:
		s.seq, s.prev, s.mark = end.lastSeq, end.lastHash, chainContinued
		s.reported = s.seq // the head the last run wrote at its close
	}
	return nil
}

// openAppend opens path for appending, creating it readable by its owner
// only.
func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

// OpenFile returns a Log appending to the file at path, created with mode
// 0600. With Options.Chain, a file that ends with a chained record has its
// chain continued, so that a restart does not break it.
func OpenFile(path string, opts Options) (*Log, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	s := newSink(f, path, opts)
	s.c, s.path = f, path
	if err := s.resume(); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	return newLog(s), nil
}
