package config

// Saving the file: admin API changes written back (admin_persist).

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	json "github.com/goccy/go-json"
)

// ReplaceKey returns the JSON object data with the value of key replaced by
// value (added at the end when absent). Every other member keeps its place
// and its text as written, so an operator's file keeps its other settings.
func ReplaceKey(data []byte, key string, value []byte) ([]byte, error) {
	if err := syntaxCheck(data); err != nil {
		return nil, err
	}
	d := &decoder{}
	members := d.object("", data)
	if len(d.problems) > 0 {
		return nil, &Error{Problems: d.problems}
	}
	var out bytes.Buffer
	out.WriteString("{\n")
	replaced := false
	write := func(k string, v []byte, last bool) {
		kb, _ := json.Marshal(k)
		out.WriteString("  ")
		out.Write(kb)
		out.WriteString(": ")
		out.Write(v)
		if !last {
			out.WriteByte(',')
		}
		out.WriteByte('\n')
	}
	for i, m := range members {
		v := bytes.TrimSpace(m.value)
		if m.key == key {
			v, replaced = value, true
		}
		write(m.key, v, i == len(members)-1 && replaced)
	}
	if !replaced {
		write(key, value, true)
	}
	out.WriteString("}\n")
	return out.Bytes(), nil
}

// SaveKey replaces the value of key in the configuration file at path with
// value, marshalled as JSON, leaving every other member as written (see
// ReplaceKey). The file is replaced atomically: a temporary file in the
// same directory, with the original's permissions, synced and renamed over
// it.
func SaveKey(path, key string, value any) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	list, err := json.MarshalIndent(value, "  ", "  ")
	if err != nil {
		return err
	}
	data, err := ReplaceKey(old, key, list)
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
