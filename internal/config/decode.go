package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// problem is one mistake in a configuration: where it is and what is wrong.
type problem struct {
	field string // "timeouts.idle", "listeners[0].name"; "" for the file as a whole
	line  int    // 0 if unknown: the key is missing, or the Config was built in code
	msg   string
}

func (p problem) Error() string {
	switch {
	case p.field != "" && p.line > 0:
		return fmt.Sprintf("%s (line %d): %s", p.field, p.line, p.msg)
	case p.field != "":
		return p.field + ": " + p.msg
	case p.line > 0:
		return fmt.Sprintf("line %d: %s", p.line, p.msg)
	}
	return p.msg
}

// problems is every mistake found in one configuration.
type problems []problem

func (ps problems) Error() string {
	if len(ps) == 1 {
		return ps[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(ps))
	for _, p := range ps {
		b.WriteString("\n  " + p.Error())
	}
	return b.String()
}

// errEmpty is Parse's error for a file with nothing in it but comments.
var errEmpty = errors.New("the configuration is empty")

// decode reads data into cfg over its defaults. Unlike a yaml.Decoder with
// KnownFields, it does not stop at the first mistake: it checks the document
// against cfg's type first, reporting every unknown key and every value of
// the wrong type with its line, leaves those out, and decodes the rest. lines
// maps each field path present in the file to its line. err is errEmpty, or
// the syntax error that stopped the reading.
func decode(data []byte, cfg *Config) (lines map[string]int, found problems, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, problems{syntaxProblem(err)}
	}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		return nil, nil, errEmpty
	}
	w := walker{lines: map[string]int{}}
	root := doc.Content[0]
	if w.check(root, reflect.TypeOf(cfg).Elem(), "") {
		if err := root.Decode(cfg); err != nil {
			w.problems = append(w.problems, problem{msg: err.Error()})
		}
	}
	return w.lines, w.problems, nil
}

// yamlLine finds the line in go-yaml's syntax errors: "yaml: line 3: ...".
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxProblem(err error) problem {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return problem{line: n, msg: "not valid YAML: " + m[2]}
	}
	return problem{msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

// walker checks a YAML tree against a Go type, by the fields' yaml tags.
type walker struct {
	lines    map[string]int
	problems problems
}

func (w *walker) bad(n *yaml.Node, field, format string, args ...any) {
	w.problems = append(w.problems, problem{field: field, line: n.Line, msg: fmt.Sprintf(format, args...)})
}

var durationType = reflect.TypeOf(time.Duration(0))

// check reports what in n does not fit t, at path, and removes the mapping
// entries at fault so that what remains decodes. It returns false if n as a
// whole cannot be decoded into t.
func (w *walker) check(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, seen := w.lines[path]; !seen && path != "" {
		w.lines[path] = n.Line
	}
	if n.ShortTag() == "!!null" {
		return true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.bad(n, path, "expected keys and values, not %s", describe(n))
			return false
		}
		w.checkStruct(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.bad(n, path, "expected keys and values, not %s", describe(n))
			return false
		}
		w.checkMap(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.bad(n, path, "expected a list, not %s", describe(n))
			return false
		}
		for i, item := range n.Content {
			if !w.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
				// A null keeps the later items' indexes, which the
				// semantic checks' field names use.
				n.Content[i] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: item.Line}
			}
		}
	default:
		return w.checkScalar(n, t, path)
	}
	return true
}

func (w *walker) checkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields := map[string]reflect.Type{}
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			fields[name] = f.Type
			names = append(names, name)
		}
	}
	seen := map[string]int{}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			w.checkMerge(v, t, path)
			kept = append(kept, k, v)
			continue
		}
		field := join(path, k.Value)
		ft, known := fields[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode:
			w.bad(k, path, "a key must be a plain name, not %s", describe(k))
		case !known:
			w.bad(k, field, "unknown key; %s", suggest(k.Value, names))
		case seen[k.Value] > 0:
			w.bad(k, field, "set twice (first at line %d)", seen[k.Value])
		default:
			seen[k.Value] = k.Line
			w.lines[field] = k.Line
			if w.check(v, ft, field) {
				kept = append(kept, k, v)
			}
		}
	}
	n.Content = kept
}

// checkMerge checks the mappings merged in with "<<: *anchor".
func (w *walker) checkMerge(v *yaml.Node, t reflect.Type, path string) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, m := range v.Content {
			w.checkMerge(m, t, path)
		}
		return
	}
	w.check(v, t, path)
}

func (w *walker) checkMap(n *yaml.Node, t reflect.Type, path string) {
	kept := n.Content[:0]
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := fmt.Sprintf("%s[%q]", path, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			w.bad(k, path, "a key must be a plain name, not %s", describe(k))
		case seen[k.Value] > 0:
			w.bad(k, field, "set twice (first at line %d)", seen[k.Value])
		default:
			seen[k.Value] = k.Line
			w.lines[field] = k.Line
			if w.check(v, t.Elem(), field) {
				kept = append(kept, k, v)
			}
		}
	}
	n.Content = kept
}

// checkScalar checks a value of one of the configuration's scalar types by
// decoding it alone, so that go-yaml's rules (YAML 1.1 booleans, quoted
// strings) decide, and says what is expected in the admin's words.
func (w *walker) checkScalar(n *yaml.Node, t reflect.Type, path string) bool {
	expected, ok := map[reflect.Kind]string{
		reflect.String: "text", reflect.Bool: "true or false",
		reflect.Int: "a whole number", reflect.Float64: "a number",
	}[t.Kind()]
	switch {
	case t == durationType:
		expected = "a duration such as 60s or 10m"
	case !ok:
		expected = "a " + t.String()
	}
	if n.Kind != yaml.ScalarNode {
		w.bad(n, path, "expected %s, not %s", expected, describe(n))
		return false
	}
	err := n.Decode(reflect.New(t).Interface())
	// go-yaml truncates 1.5 into an int field without a word.
	if err == nil && t.Kind() == reflect.Int && n.ShortTag() != "!!int" {
		err = errors.New("not an integer")
	}
	switch {
	case err == nil:
		return true
	case t == durationType:
		w.bad(n, path, "%q is not a duration; write 60s or 10m", n.Value)
	default:
		w.bad(n, path, "%q is not %s", n.Value, expected)
	}
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "keys and values"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the known key closest to a misspelt one, or lists them all
// when none is close.
func suggest(key string, known []string) string {
	best, bestDist := "", 3 // more than 2 edits is another word
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "expected one of " + strings.Join(known, ", ")
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours ("idel" for "idle") each
// count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// locate gives the semantic problems the line of their field, or of the
// nearest enclosing one in the file (where a missing key belongs), drops
// those about a field whose value was already refused, and sorts them all
// in file order.
func locate(semantic problems, lines map[string]int, found problems) problems {
	refused := map[string]bool{}
	for _, p := range found {
		refused[p.field] = true
	}
	out := found
	for _, p := range semantic {
		if underRefused(p.field, refused) {
			continue
		}
		for f := p.field; f != "" && p.line == 0; f = parent(f) {
			p.line = lines[f]
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b problem) int {
		// Problems without a line (missing keys) go last.
		return cmp.Or(cmp.Compare(lineOrMax(a.line), lineOrMax(b.line)), cmp.Compare(a.field, b.field))
	})
	return out
}

// underRefused reports whether field or one that holds it was refused; ""
// stands for the whole file.
func underRefused(field string, refused map[string]bool) bool {
	for f := field; ; f = parent(f) {
		if refused[f] {
			return true
		}
		if f == "" {
			return false
		}
	}
}

// parent cuts the last step off a field path: "a.b[2]" → "a.b" → "a" → "".
func parent(field string) string {
	if strings.HasSuffix(field, "]") {
		if i := strings.LastIndexByte(field, '['); i > 0 {
			return field[:i]
		}
	}
	i := strings.LastIndexByte(field, '.')
	if i < 0 {
		return ""
	}
	return field[:i]
}

func lineOrMax(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}
