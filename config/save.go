package config

// Saving the file: admin API changes written back (admin_persist).

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	json "github.com/goccy/go-json"
)

// ReplaceValue returns the JSON object data with the value at path (keys
// of nested objects, such as "pools", "api", "backends") replaced by
// value. Every other byte stays as written: the operator's layout,
// comments-free as JSON is, and other settings are kept. A last key that is
// absent is added at the end of its object; an absent object on the way is
// an error.
func ReplaceValue(data []byte, path []string, value []byte) ([]byte, error) {
	if err := syntaxCheck(data); err != nil {
		return nil, err
	}
	obj := 0
	for obj < len(data) && data[obj] != '{' {
		if !isSpace(data[obj]) {
			return nil, errors.New("the configuration must be a JSON object")
		}
		obj++
	}
	if obj == len(data) {
		return nil, errors.New("the configuration must be a JSON object")
	}
	for i, key := range path {
		m, err := findMember(data, obj, key)
		if err != nil {
			return nil, err
		}
		last := i == len(path)-1
		switch {
		case m.found && last:
			return splice(data, m.start, m.end, indentValue(value, lineIndent(data, m.keyStart))), nil
		case m.found:
			if data[m.start] != '{' {
				return nil, fmt.Errorf("%s is not an object", strings.Join(path[:i+1], "."))
			}
			obj = m.start
		case !last:
			return nil, fmt.Errorf("the file has no %s", strings.Join(path[:i+1], "."))
		default:
			k, _ := json.Marshal(key)
			if m.lastEnd < 0 { // an empty object
				return splice(data, obj+1, obj+1, append(append(k, ": "...), value...)), nil
			}
			indent := lineIndent(data, m.lastKey)
			sep := "\n" + indent
			if !bytes.Contains(data[obj:m.lastKey], []byte("\n")) {
				sep = " " // the object is on one line
			}
			member := append(append(append([]byte(","+sep), k...), ": "...), indentValue(value, indent)...)
			return splice(data, m.lastEnd, m.lastEnd, member), nil
		}
	}
	return nil, errors.New("empty path")
}

// span is where a key of a JSON object is, or where to add it.
type span struct {
	found      bool
	keyStart   int // offset of the key's opening quote
	start, end int // the value's bytes
	lastKey    int // offset of the last member's key, to add after it
	lastEnd    int // end of the last member's value; -1: the object is empty
}

// findMember finds key among the members of the object that starts at
// data[obj].
func findMember(data []byte, obj int, key string) (span, error) {
	m := span{lastEnd: -1}
	dec := stdjson.NewDecoder(bytes.NewReader(data[obj:]))
	if _, err := dec.Token(); err != nil {
		return m, err
	}
	for dec.More() {
		before := int(dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return m, err
		}
		k, _ := tok.(string)
		var raw stdjson.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return m, err
		}
		end := obj + int(dec.InputOffset())
		keyStart := obj + before + bytes.IndexByte(data[obj+before:], '"')
		m.lastKey, m.lastEnd = keyStart, end
		if k == key && !m.found {
			m.found, m.keyStart, m.start, m.end = true, keyStart, end-len(raw), end
		}
	}
	return m, nil
}

// lineIndent is the white space that starts the line holding data[off].
func lineIndent(data []byte, off int) string {
	start := bytes.LastIndexByte(data[:off], '\n') + 1
	end := start
	for end < off && (data[end] == ' ' || data[end] == '\t') {
		end++
	}
	return string(data[start:end])
}

// indentValue prefixes each line of value but the first with indent, so a
// multi-line value lines up under its key.
func indentValue(value []byte, indent string) []byte {
	return bytes.ReplaceAll(value, []byte("\n"), []byte("\n"+indent))
}

func splice(data []byte, start, end int, with []byte) []byte {
	out := make([]byte, 0, len(data)-(end-start)+len(with))
	out = append(out, data[:start]...)
	out = append(out, with...)
	return append(out, data[end:]...)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SaveBackends writes backends, the pool's as the file holds them, into
// that pool's place in the configuration file at path: "backends" for the
// default pool, "pools.NAME.backends" for another. Every other byte of the
// file stays as written (see ReplaceValue). The file is replaced
// atomically: a temporary file in the same directory, with the original's
// permissions, synced and renamed over it.
func SaveBackends(path, pool string, backends any) error {
	keys := []string{"backends"}
	if pool != DefaultPool {
		keys = []string{"pools", pool, "backends"}
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	list, err := json.MarshalIndent(backends, "", "  ")
	if err != nil {
		return err
	}
	data, err := ReplaceValue(old, keys, list)
	if err != nil {
		return fmt.Errorf("the file no longer parses: %w", err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync() //nolint:errcheck // best effort: the rename is done
		dir.Close()
	}
	return nil
}
