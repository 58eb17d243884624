package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
)

// VerifyError names the first record of a chained log that was broken,
// edited, removed or moved.
type VerifyError struct {
	Line   int // 1-based
	Reason string
}

// Error returns "line L: reason".
func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Verify checks the hash chain of a log written with Options.Chain, and
// returns the number of records (on error, of those before the bad one). Its
// error is a *VerifyError for the first
// line that is not a chained JSON record, that does not follow the previous
// record's seq (a record missing or moved), or whose hash does not match the
// next record's prev (an edited record, or records removed and the rest
// renumbered). Other errors are r's.
//
// A file may begin with a chain's start or, after rotation, with its
// continuation; rotated files concatenated in order verify as one. Verify
// cannot tell whether the last record was edited or records removed from the
// end: compare the last record's hash with the "last_hash" that Close and
// Reopen write to the operational log.
func Verify(r io.Reader) (records int, err error) {
	br := bufio.NewReader(r)
	var (
		lastSeq  uint64
		lastHash string
	)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return n - 1, nil
		}
		if err == io.EOF {
			return n - 1, &VerifyError{n, "incomplete record: no newline at the end of the file"}
		}
		if err != nil {
			return n - 1, err
		}
		line = line[:len(line)-1]
		var rec struct {
			Seq   *uint64 `json:"seq"`
			Prev  *string `json:"prev"`
			Chain string  `json:"chain"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return n - 1, &VerifyError{n, "not a JSON record"}
		}
		if rec.Seq == nil || rec.Prev == nil {
			return n - 1, &VerifyError{n, "not a chained record: no seq or prev"}
		}
		seq, prev := *rec.Seq, *rec.Prev
		if reason := link(n, rec.Chain, seq, prev, lastSeq, lastHash); reason != "" {
			return n - 1, &VerifyError{n, reason}
		}
		if n > 1 && prev != lastHash && rec.Chain != chainContinued {
			return n - 2, &VerifyError{n - 1, fmt.Sprintf("record edited, or records after it removed: its hash is not the prev of line %d", n)}
		}
		sum := sha256.Sum256(line)
		lastSeq, lastHash = seq, hex.EncodeToString(sum[:])
	}
}

// link checks that record n, with its chain marker, seq and prev, follows the
// previous record, and says why not.
func link(n int, chain string, seq uint64, prev string, lastSeq uint64, lastHash string) string {
	switch {
	case chain == chainStart && (seq != 1 || prev != ""):
		if prev != "" {
			return "chain start with a prev"
		}
		return fmt.Sprintf("chain starts at seq %d: earlier records missing", seq)
	case n == 1 && chain == "":
		return fmt.Sprintf("seq %d is neither a chain start nor a continuation: earlier records missing", seq)
	case n == 1:
		return ""
	case chain == chainStart:
		return "a new chain starts here: the previous chain ends without continuation"
	case seq <= lastSeq:
		return fmt.Sprintf("seq %d after seq %d: record out of order or repeated", seq, lastSeq)
	case seq > lastSeq+1:
		return fmt.Sprintf("seq %d after seq %d: %d record(s) missing or out of order", seq, lastSeq, seq-lastSeq-1)
	case chain == chainContinued && prev != lastHash:
		return fmt.Sprintf("continues a chain whose last record is not line %d", n-1)
	}
	return ""
}
