package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Zero-downtime binary upgrade (SIGUSR2): the running fastlb starts its
// executable again and hands it its listening sockets as inherited file
// descriptors, named in an environment variable. The new process serves on
// them, runs its first health round, and writes "ready" to a pipe the old
// process also hands over; the old process then stops accepting, finishes
// its requests and exits. If the new process exits or is not ready in time,
// the old one keeps serving and logs why.

const (
	envListeners = "FASTLB_LISTENERS"  // "plain=3,admin=4,tls=5": inherited listener fds
	envReadyFD   = "FASTLB_READY_FD"   // fd of the pipe to write "ready" to
	envSecretsFD = "FASTLB_SECRETS_FD" // fd of the pipe the secrets come through
	upgradeWait  = time.Minute         // how long the old process waits for the new one
)

// secrets are what a new process takes over from the old one besides the
// listeners, so that clients notice nothing: the sticky cookie key made at
// start (used when the file sets none), and the HTTPS listener's session
// ticket keys, newest first. They go through a pipe, not the environment,
// which other processes of the same user can read.
type secrets struct {
	CookieSecret []byte     `json:"cookie_secret"`
	TicketKeys   [][32]byte `json:"ticket_keys"`
}

// inheritedSecrets reads the secrets an upgrading parent handed over, or
// returns nil when this process was not started that way.
func inheritedSecrets() (*secrets, error) {
	fdText := os.Getenv(envSecretsFD)
	if fdText == "" {
		return nil, nil
	}
	os.Unsetenv(envSecretsFD)
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return nil, fmt.Errorf("%s: bad descriptor %q", envSecretsFD, fdText)
	}
	f := os.NewFile(uintptr(fd), "secrets")
	defer f.Close()
	var s secrets
	if err := json.NewDecoder(f).Decode(&s); err != nil {
		return nil, fmt.Errorf("reading the secrets handed over: %w", err)
	}
	if len(s.CookieSecret) == 0 {
		return nil, errors.New("the secrets handed over hold no cookie key")
	}
	return &s, nil
}

// inherited returns the listeners handed over by an upgrading parent, by
// name, or nil when this process was not started that way.
func inherited() (map[string]net.Listener, error) {
	spec := os.Getenv(envListeners)
	if spec == "" {
		return nil, nil
	}
	os.Unsetenv(envListeners)
	out := map[string]net.Listener{}
	for item := range strings.SplitSeq(spec, ",") {
		name, fdText, ok := strings.Cut(item, "=")
		fd, err := strconv.Atoi(fdText)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: bad item %q", envListeners, item)
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close() // FileListener duplicated it
		if err != nil {
			return nil, fmt.Errorf("inherited listener %s: %w", name, err)
		}
		out[name] = ln
	}
	return out, nil
}

// tellParentReady writes "ready" to the pipe of an upgrading parent.
func tellParentReady() {
	fdText := os.Getenv(envReadyFD)
	if fdText == "" {
		return
	}
	os.Unsetenv(envReadyFD)
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	f.WriteString("ready\n") //nolint:errcheck // the parent treats silence as failure
	f.Close()
}

// upgrade starts the executable again with this process's listeners and
// waits for it to be ready. It returns nil once the new process serves; the
// caller then shuts down. On error the caller keeps serving.
func (a *app) upgrade() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find my executable: %w", err)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var spec []string
	for _, l := range a.listeners {
		f, err := handOver(l.ln, l.name)
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.name, err)
		}
		files = append(files, f)
		spec = append(spec, fmt.Sprintf("%s=%d", l.name, 3+len(files)-1))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	files = append(files, w)
	readyFD := 3 + len(files) - 1
	// The secrets fit in the pipe's buffer: written whole before the new
	// process starts, read by it at its start.
	sr, sw, err := os.Pipe()
	if err != nil {
		return err
	}
	files = append(files, sr)
	secretsFD := 3 + len(files) - 1
	err = json.NewEncoder(sw).Encode(a.secrets())
	sw.Close()
	if err != nil {
		return fmt.Errorf("cannot hand over the secrets: %w", err)
	}

	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envListeners+"="+strings.Join(spec, ","), envReadyFD+"="+strconv.Itoa(readyFD),
		envSecretsFD+"="+strconv.Itoa(secretsFD))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", exe, err)
	}
	w.Close() // the child holds the write end now
	a.logger.Info("binary upgrade: new process started", "pid", cmd.Process.Pid, "executable", exe)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if ok {
			// The child outlives us; nobody waits for it any more.
			go func() { <-exited }()
			return nil
		}
		err := <-exited
		return fmt.Errorf("the new process exited before it was ready: %v", exitCause(err))
	case err := <-exited:
		return fmt.Errorf("the new process exited before it was ready: %v", exitCause(err))
	case <-time.After(upgradeWait):
		cmd.Process.Kill()
		return fmt.Errorf("the new process was not ready within %s; killed it", upgradeWait)
	}
}

// secrets are this process's secrets, for a new process to take over.
func (a *app) secrets() *secrets {
	s := &secrets{CookieSecret: a.secret}
	if a.tlsListener != nil {
		s.TicketKeys = a.tlsListener.TicketKeys()
	}
	return s
}

// handOver returns a duplicate of ln's socket to give a new process. Not
// through the listener's File method: exec passes a file on through its Fd
// method, which for such a file puts the descriptor into blocking mode, and
// with it the listener this process goes on accepting on (a duplicate
// shares the socket's flags). Its next accept then waits in the kernel, and
// closing the listener at shutdown waits for that accept, that is for a
// connection that may never come. os.NewFile keeps the flags as they are.
func handOver(ln net.Listener, name string) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, errors.New("cannot be handed over")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return os.NewFile(uintptr(fd), name), nil
}

func exitCause(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
