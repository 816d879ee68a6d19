package tracker

import (
	"encoding/json"
	"errors"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
)

// fakeDriver records the params it was opened with and returns a fixed pool or error.
type fakeDriver struct {
	pool Pool
	err  error
	got  *json.RawMessage
}

func (d fakeDriver) New(params json.RawMessage) (Pool, error) {
	if d.got != nil {
		*d.got = append(json.RawMessage(nil), params...)
	}
	return d.pool, d.err
}

type fakePool struct{}

func (fakePool) Get() (Conn, error) { return nil, errors.New("fake pool has no conns") }
func (fakePool) Close() error       { return nil }

// isolateRegistry empties the driver registry for the duration of a test and restores it after,
// so that drivers registered by other test files (the memory driver) neither leak into these
// tests nor get lost.
func isolateRegistry(t *testing.T) {
	t.Helper()
	driversMu.Lock()
	saved := drivers
	drivers = make(map[string]Driver)
	driversMu.Unlock()
	t.Cleanup(func() {
		driversMu.Lock()
		drivers = saved
		driversMu.Unlock()
	})
}

func TestRegisterPanics(t *testing.T) {
	tests := []struct {
		name     string
		setup    func()
		register func()
		want     string
	}{
		{
			name:     "nil driver",
			setup:    func() {},
			register: func() { Register("nil-driver", nil) },
			want:     "tracker: Register driver is nil",
		},
		{
			name:     "duplicate name",
			setup:    func() { Register("dup", fakeDriver{}) },
			register: func() { Register("dup", fakeDriver{}) },
			want:     "tracker: Register called twice for driver dup",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateRegistry(t)
			tt.setup()
			assert.PanicsWithValue(t, tt.want, tt.register)
		})
	}
}

func TestRegisterNilDoesNotRegister(t *testing.T) {
	isolateRegistry(t)
	require.Panics(t, func() { Register("nil-driver", nil) })
	assert.Empty(t, Drivers())
}

func TestRegisterDuplicateKeepsFirst(t *testing.T) {
	isolateRegistry(t)
	first := fakeDriver{pool: fakePool{}}
	Register("dup", first)
	require.Panics(t, func() { Register("dup", fakeDriver{err: errors.New("second")}) })

	pool, err := Open(config.DriverConfig{Name: "dup"})
	require.NoError(t, err, "the first registration must still be in force")
	assert.Equal(t, fakePool{}, pool)
}

func TestDriversSorted(t *testing.T) {
	tests := []struct {
		name     string
		register []string
		want     []string
	}{
		{name: "none", register: nil, want: []string{}},
		{name: "one", register: []string{"memory"}, want: []string{"memory"}},
		{
			name:     "unsorted registration",
			register: []string{"redis", "memory", "Zeta", "alpha", "mem"},
			want:     []string{"Zeta", "alpha", "mem", "memory", "redis"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateRegistry(t)
			for _, name := range tt.register {
				Register(name, fakeDriver{})
			}
			got := Drivers()
			assert.Equal(t, tt.want, got)
			assert.True(t, sort.StringsAreSorted(got))
			// The result is a copy: changing it must not change the registry.
			if len(got) > 0 {
				got[0] = "changed"
				assert.Equal(t, tt.want, Drivers())
			}
		})
	}
}

func TestOpen(t *testing.T) {
	errBoom := errors.New("boom: key \"size\" is bad")
	tests := []struct {
		name       string
		cfg        config.DriverConfig
		wantErr    bool
		errContain []string
		wantErrIs  error
		wantParams string
	}{
		{
			name:       "unknown driver lists registered names",
			cfg:        config.DriverConfig{Name: "nosuch"},
			wantErr:    true,
			errContain: []string{`"nosuch"`, "registered: bad, good", "forgotten import"},
		},
		{
			name:       "empty name is unknown",
			cfg:        config.DriverConfig{Name: ""},
			wantErr:    true,
			errContain: []string{`unknown driver ""`, "bad, good"},
		},
		{
			name:       "driver error is wrapped with the driver name",
			cfg:        config.DriverConfig{Name: "bad", Params: json.RawMessage(`{"size":-1}`)},
			wantErr:    true,
			errContain: []string{`driver "bad"`, `key "size"`},
			wantErrIs:  errBoom,
		},
		{
			name:       "params are passed through",
			cfg:        config.DriverConfig{Name: "good", Params: json.RawMessage(`{"shards": 4}`)},
			wantParams: `{"shards": 4}`,
		},
		{
			name:       "nil params are passed as nil",
			cfg:        config.DriverConfig{Name: "good"},
			wantParams: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateRegistry(t)
			var got json.RawMessage
			Register("good", fakeDriver{pool: fakePool{}, got: &got})
			Register("bad", fakeDriver{err: errBoom})

			pool, err := Open(tt.cfg)
			if tt.wantErr {
				require.Error(t, err)
				assert.Nil(t, pool)
				for _, s := range tt.errContain {
					assert.Contains(t, err.Error(), s)
				}
				if tt.wantErrIs != nil {
					assert.ErrorIs(t, err, tt.wantErrIs)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, fakePool{}, pool)
			assert.Equal(t, tt.wantParams, string(got))
		})
	}
}

func TestOpenUnknownWithNoDrivers(t *testing.T) {
	isolateRegistry(t)
	_, err := Open(config.DriverConfig{Name: "memory"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown driver "memory"`)
}
