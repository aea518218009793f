# popd: `make` builds ./popd; `make check` runs every test; `make demo` shows
# a session; `make install` honours DESTDIR and PREFIX. SANITIZE=1 builds
# and tests with AddressSanitizer and UndefinedBehaviorSanitizer.

CXX      ?= g++
PREFIX   ?= /usr/local
DESTDIR  ?=
SANITIZE ?=

CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor \
            -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE -I.
LDFLAGS  += -pie -Wl,-z,relro,-z,now
LIBS     = -lpam -llockfile -lssl -lcrypto -lxxhash

ifeq ($(SANITIZE),1)
BUILD     = build/sanitize
CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
POPD      = $(BUILD)/popd
else
BUILD     = build/release
POPD      = popd
endif

LIB_SOURCES  = options.c++ $(wildcard protocol/*.c++ mailbox/*.c++ auth/*.c++ io/*.c++ server/*.c++)
TEST_SOURCES = $(wildcard tests/*.c++)  # not tests/faults/ (a preload shim) nor tests/fuzz/
LIB_OBJECTS  = $(LIB_SOURCES:%.c++=$(BUILD)/%.o)
TEST_OBJECTS = $(TEST_SOURCES:%.c++=$(BUILD)/%.o)
DEPS         = $(LIB_OBJECTS:.o=.d) $(TEST_OBJECTS:.o=.d) $(BUILD)/popd.d $(wildcard $(BUILD)/tests/fuzz/*.d)

all: $(POPD)

$(POPD): $(BUILD)/popd.o $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/libpopd.a: $(LIB_OBJECTS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/unit-tests: $(TEST_OBJECTS) $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# The fault-injection shim for the crash tests, never sanitized: it is
# preloaded into popd.
$(BUILD)/libfaults.so: tests/faults/shim.c++
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -fPIC -shared -o $@ $< -ldl

# Fuzz targets (tests/fuzz/): replayed on their corpus by `make check`;
# fuzzed with clang's libFuzzer, each for FUZZ_SECONDS, by `make fuzz`.
FUZZ_TARGETS = engine mbox base64
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   = -std=c++20 -g -O1 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz_sources_engine = protocol/engine.c++ protocol/base64.c++ protocol/stuffing.c++
fuzz_sources_mbox   = mailbox/mbox.c++ mailbox/digest.c++
fuzz_sources_base64 = protocol/base64.c++

$(BUILD)/fuzz-replay-%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/replay.o $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

build/fuzz/%: tests/fuzz/%.c++ $(LIB_SOURCES) $(wildcard */*.h) params.h
	@mkdir -p $(dir $@)
	clang++ $(FUZZ_FLAGS) -o $@ $< $(fuzz_sources_$*) -lcrypto -lxxhash

fuzz:
	@tests/install-deps fuzz
	$(MAKE) $(FUZZ_TARGETS:%=build/fuzz/%)
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$t && \
	  build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    build/fuzz/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

$(BUILD)/%.o: %.c++
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c -o $@ $<

-include $(DEPS)

# Debian packages the build and the tests need; installed when missing.
deps:
	@tests/install-deps

check: deps
	$(MAKE) $(POPD) $(BUILD)/unit-tests $(BUILD)/libfaults.so $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay-%)
	$(BUILD)/unit-tests
	for t in $(FUZZ_TARGETS); do $(BUILD)/fuzz-replay-$$t tests/fuzz/corpus/$$t/* || exit 1; done
	tests/run-e2e.sh $(POPD) $(BUILD)/libfaults.so

# Side by side with Dovecot and popa3d (bench/run.py; as root): SIZE=small,
# medium (10,000 messages, ~200 MB) or large (100,000, ~1.1 GB). Not in CI.
SIZE ?= medium
RUNS ?= 5
bench: deps
	@tests/install-deps bench
	$(MAKE) popd
	/usr/bin/python3 bench/run.py --size $(SIZE) --runs $(RUNS)

demo: deps
	$(MAKE) popd
	@demo/run.sh ./popd

# The PAM service file is installed only if there is none: it is the
# administrator's once it exists.
install: popd
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)/etc/xinetd.d $(DESTDIR)/etc/pam.d $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 popd $(DESTDIR)$(PREFIX)/sbin/popd
	install -m 644 man/popd.8 $(DESTDIR)$(PREFIX)/share/man/man8/popd.8
	sed 's|/usr/local/sbin/popd|$(PREFIX)/sbin/popd|' xinetd.d/popd >$(DESTDIR)/etc/xinetd.d/popd
	sed 's|/usr/local/sbin/popd|$(PREFIX)/sbin/popd|' systemd/popd@.service \
	  >$(DESTDIR)$(PREFIX)/lib/systemd/system/popd@.service
	install -m 644 systemd/popd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/popd.socket
	[ -e $(DESTDIR)/etc/pam.d/popd ] || install -m 644 pam.d/popd $(DESTDIR)/etc/pam.d/popd

clean:
	rm -rf build popd

.PHONY: all deps check demo install clean fuzz bench
