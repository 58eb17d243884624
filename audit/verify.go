package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLine is the longest line Verify and OpenFile read, far more than
// MaxRecord, so that records of other writers are read whole too.
const maxLine = 1 << 20

// DefaultMaxBad is how many bad lines a Verifier reports unless told.
const DefaultMaxBad = 100

// VerifyError is Verify's error for the first bad line of a chained log.
type VerifyError struct {
	Line   int // 1-based
	Reason string
}

// Error returns "line L: reason".
func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Finding is something a Verifier found at a line of a file, or about the
// file as a whole (Line 0).
type Finding struct {
	Line int
	// Bad means the chain is broken here: a record edited, removed, moved or
	// damaged. Otherwise the finding is a note, such as where a file's
	// chain begins.
	Bad  bool
	Text string
}

// String returns "line L: text", or the text alone for the whole file.
func (f Finding) String() string {
	if f.Line == 0 {
		return f.Text
	}
	return fmt.Sprintf("line %d: %s", f.Line, f.Text)
}

// FileResult is what Verifier.File found in one file.
type FileResult struct {
	Records         int    // chained records
	FirstSeq, Seq   uint64 // of its first and last chained record; 0 if none
	Hash            string // hex SHA-256 of its last chained record, as the operational log gives a head
	Findings        []Finding
	Bad             int // bad lines, counting those beyond the Verifier's limit
	OmittedFindings int // findings beyond the limits, not in Findings
}

// Verifier checks the hash chain of a log written with Options.Chain across
// the files it is kept in, given to File in order: the oldest rotated file
// first, the current one last. Each file's link to the previous one is
// checked; a first file that continues an earlier chain is noted, not
// faulted. Verification goes on past a bad line, so that every bad line is
// reported, up to MaxBad in all. The zero value is ready to use.
//
// A Verifier cannot tell whether records were removed from the end of the
// last file: compare the last seq and hash with a chain head that popproxy
// wrote to the operational log.
type Verifier struct {
	// MaxBad bounds the bad lines reported over all files, and the notes;
	// if 0, DefaultMaxBad. Bad lines beyond it are still counted.
	MaxBad int

	files      int          // given to File so far
	bad, notes int          // findings kept so far
	last       *chainRecord // the last good record, nil before the first
	// unlinked means bad lines followed last, so the next record's link to
	// it cannot be checked.
	unlinked bool
}

// chainRecord is where a chained record is, and what the next one links to.
type chainRecord struct {
	file int // Verifier.files when it was read
	name string
	line int
	seq  uint64
	hash string
}

// chainFields are the fields of a record that the chain concerns.
type chainFields struct {
	Seq      *uint64 `json:"seq"`
	Prev     *string `json:"prev"`
	Chain    string  `json:"chain"`
	Event    string  `json:"event"`
	Found    string  `json:"found"`     // chain.start only
	LastSeq  *uint64 `json:"last_seq"`  // chain.start only
	LastHash string  `json:"last_hash"` // chain.start only
}

// File verifies the next file, named name in findings, read from r. Its
// error is r's; the lines before it are verified, and the next file's link
// is not checked.
func (v *Verifier) File(name string, r io.Reader) (FileResult, error) {
	v.files++
	f := &fileCheck{v: v, name: name, file: v.files}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		switch {
		case err == io.EOF:
			return f.res, nil
		case err == io.ErrUnexpectedEOF:
			f.bad(n, "incomplete record: no newline at the end of the file")
			return f.res, nil
		case err == errLineTooLong:
			f.bad(n, fmt.Sprintf("longer than %d octets: not a record", maxLine))
		case err != nil:
			v.unlinked = true
			return f.res, err
		default:
			f.record(n, line)
		}
	}
}

// fileCheck is the verification of one file.
type fileCheck struct {
	v    *Verifier
	name string
	file int // its number, from 1
	res  FileResult
}

func (f *fileCheck) add(line int, bad bool, text string) {
	kept := &f.v.notes
	if bad {
		f.res.Bad++
		kept = &f.v.bad
	}
	limit := f.v.MaxBad
	if limit == 0 {
		limit = DefaultMaxBad
	}
	if *kept >= limit {
		f.res.OmittedFindings++
		return
	}
	*kept++
	f.res.Findings = append(f.res.Findings, Finding{Line: line, Bad: bad, Text: text})
}

// bad reports line n, which is not a chained record: the next record's link
// cannot be checked.
func (f *fileCheck) bad(n int, text string) {
	f.add(n, true, text)
	f.v.unlinked = true
}

func (f *fileCheck) note(n int, text string) { f.add(n, false, text) }

// record checks line n.
func (f *fileCheck) record(n int, line []byte) {
	var rec chainFields
	if err := json.Unmarshal(line, &rec); err != nil {
		f.bad(n, "not a JSON record")
		return
	}
	if rec.Seq == nil || rec.Prev == nil {
		f.bad(n, "not a chained record: no seq or prev")
		return
	}
	sum := sha256.Sum256(line)
	cur := &chainRecord{file: f.file, name: f.name, line: n, seq: *rec.Seq, hash: hex.EncodeToString(sum[:])}
	if f.link(n, rec) {
		f.v.last, f.v.unlinked = cur, false
	}
	f.res.Records++
	if f.res.Records == 1 {
		f.res.FirstSeq = cur.seq
	}
	f.res.Seq, f.res.Hash = f.v.last.seq, f.v.last.hash
}

// link checks how the record at line n follows the last good one, and
// reports whether it becomes the one the next record must follow.
func (f *fileCheck) link(n int, rec chainFields) bool {
	v, last, seq, prev := f.v, f.v.last, *rec.Seq, *rec.Prev
	atFileStart := last != nil && last.file != f.file // the previous record is in an earlier file
	switch {
	case rec.Chain == chainStart && prev != "":
		f.add(n, true, "chain start with a prev")
	case rec.Chain == chainStart && seq != 1:
		f.add(n, true, fmt.Sprintf("chain starts at seq %d: earlier records missing", seq))
	case rec.Chain == chainStart && rec.Event == EventChainStart:
		f.segment(n, rec)
	case rec.Chain == chainStart && atFileStart:
		f.note(n, fmt.Sprintf("a new chain starts: the end of %s is not checked", last.name))
	case rec.Chain == chainStart && last != nil:
		f.add(n, true, "a new chain starts here: the previous chain ends without continuation")
	case rec.Chain == chainStart:
	case last == nil && rec.Chain == chainContinued:
		f.note(0, fmt.Sprintf("continues from seq %d, link not checked", seq))
	case last == nil:
		f.add(n, true, fmt.Sprintf("seq %d is neither a chain start nor a continuation: earlier records missing", seq))
	case v.unlinked:
		// Bad lines came between: they are reported, the link cannot be checked.
	case seq <= last.seq:
		f.add(n, true, fmt.Sprintf("seq %d after seq %d: record out of order or repeated", seq, last.seq))
		return false // the next record should follow the last good one
	case seq > last.seq+1:
		f.add(n, true, fmt.Sprintf("seq %d after seq %d%s: %d record(s) missing or out of order", seq, last.seq, f.inPrevious(), seq-last.seq-1))
	case prev == last.hash:
	case rec.Chain == chainContinued || atFileStart:
		f.add(n, true, fmt.Sprintf("continues a chain whose last record is not %s", f.lastLine()))
	default:
		f.add(last.line, true, fmt.Sprintf("record edited, or records after it removed: its hash is not the prev of line %d", n))
	}
	return true
}

// segment checks a chain.start record, which begins a new chain where
// popproxy found the end of a file damaged: its last_seq and last_hash name
// the last record it found whole, which must be the last good one here.
func (f *fileCheck) segment(n int, rec chainFields) {
	last := f.v.last
	text := "a new chain segment starts: at restart popproxy found " + rec.Found
	switch {
	case rec.LastSeq == nil || last == nil:
		f.note(n, text)
	case *rec.LastSeq != last.seq || rec.LastHash != last.hash:
		f.add(n, true, fmt.Sprintf("%s after seq %d, but the last whole record before it is seq %d%s, or has another hash",
			text, *rec.LastSeq, last.seq, f.inPrevious()))
	default:
		f.note(n, fmt.Sprintf("%s after seq %d (the record of %s)", text, last.seq, f.lastLine()))
	}
}

// lastLine names the line of the last good record: "line L", or "line L of
// FILE" if it is in an earlier file.
func (f *fileCheck) lastLine() string {
	if last := f.v.last; last.file != f.file {
		return fmt.Sprintf("line %d of %s", last.line, last.name)
	}
	return fmt.Sprintf("line %d", f.v.last.line)
}

// inPrevious is " (end of FILE)" if the last good record is in an earlier
// file, else "".
func (f *fileCheck) inPrevious() string {
	if last := f.v.last; last.file != f.file {
		return " (end of " + last.name + ")"
	}
	return ""
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line of br without its newline, io.EOF at the
// end. A line longer than maxLine is skipped with errLineTooLong; a last line
// without a newline is io.ErrUnexpectedEOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
		return line[:len(line)-1], nil
	case err == io.EOF && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	case err != bufio.ErrBufferFull:
		return nil, err
	}
	// Longer than the buffer: gather it, up to maxLine.
	long := append([]byte(nil), line...)
	for {
		line, err = br.ReadSlice('\n')
		if len(long) <= maxLine {
			long = append(long, line...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		case len(long) > maxLine+1:
			return nil, errLineTooLong
		}
		return long[:len(long)-1], nil
	}
}

// Verify checks the hash chain of one stream written with Options.Chain and
// returns the number of chained records in it. Its error is a *VerifyError
// for the first bad line, or r's. Rotated files concatenated in order verify
// as one; Verifier checks them apart, and reports every bad line.
func Verify(r io.Reader) (records int, err error) {
	var v Verifier
	res, err := v.File("", r)
	if err != nil {
		return res.Records, err
	}
	for _, f := range res.Findings {
		if f.Bad {
			return res.Records, &VerifyError{f.Line, f.Text}
		}
	}
	return res.Records, nil
}
