# popd: `make` builds ./popd; `make check` runs every test; `make demo` shows
# a session; `make install` honours DESTDIR and PREFIX. SANITIZE=1 builds
# and tests with AddressSanitizer and UndefinedBehaviorSanitizer.

CXX      ?= g++
PREFIX   ?= /usr/local
DESTDIR  ?=
SANITIZE ?=

CXXFLAGS ?= -O2 -g
# -iquote, not -I: the project's sys/ must not stand in for <sys/...>.
CXXFLAGS += -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor \
            -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE -iquote . -iquote $(BUILD)/generated
LDFLAGS  += -pie -Wl,-z,relro,-z,now
LIBS     = -lpam -llockfile -lssl -lcrypto -lxxhash -lcrypt -largon2

ifeq ($(SANITIZE),1)
BUILD     = build/sanitize
CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
POPD      = $(BUILD)/popd
else
BUILD     = build/release
POPD      = popd
endif

# sys/mmap_hook.c++ defines mmap for the whole process: popd's binary only.
HOOK_SOURCES = sys/mmap_hook.c++
# The seccomp policy is compiled to BPF at build time (tools/), not linked.
POLICY_SOURCES = server/seccomp_policy.c++
LIB_SOURCES  = options.c++ $(filter-out $(HOOK_SOURCES) $(POLICY_SOURCES),\
               $(wildcard protocol/*.c++ mailbox/*.c++ mailbox/mbox/*.c++ mailbox/maildir/*.c++ auth/*.c++ io/*.c++ server/*.c++ sys/*.c++))
TEST_SOURCES = $(wildcard tests/unit/*.c++)
LIB_OBJECTS  = $(LIB_SOURCES:%.c++=$(BUILD)/%.o)
TEST_OBJECTS = $(TEST_SOURCES:%.c++=$(BUILD)/%.o)
HOOK_OBJECTS = $(HOOK_SOURCES:%.c++=$(BUILD)/%.o)
DEPS         = $(LIB_OBJECTS:.o=.d) $(TEST_OBJECTS:.o=.d) $(HOOK_OBJECTS:.o=.d) $(BUILD)/popd.d \
               $(wildcard $(BUILD)/tests/fuzz/*.d)

all: $(POPD)

# Exported, so that the libraries popd loads call it (sys/huge_pages.h).
$(POPD): $(BUILD)/popd.o $(HOOK_OBJECTS) $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -Wl,--export-dynamic-symbol=mmap -o $@ $^ $(LIBS)

# The pre-auth process's seccomp program, compiled from its policy by a
# program built and run here (never sanitized: it only writes a header).
$(BUILD)/generated/pre_auth_filter.h: tools/seccomp-filter.c++ $(POLICY_SOURCES) server/seccomp_policy.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -iquote . -o $(BUILD)/generated/seccomp-filter $< $(POLICY_SOURCES) -lseccomp
	$(BUILD)/generated/seccomp-filter > $@.new && mv $@.new $@
$(BUILD)/server/sandbox.o: $(BUILD)/generated/pre_auth_filter.h

$(BUILD)/libpopd.a: $(LIB_OBJECTS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/unit-tests: $(TEST_OBJECTS) $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# The fault-injection shim for the crash tests, never sanitized: it is
# preloaded into popd.
$(BUILD)/libfaults.so: tests/faults/shim.c++
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -fPIC -shared -o $@ $< -ldl

# A PAM module for the tests (tests/pam/lookup.c++), loaded by pam_wrapper
# into popd: never sanitized either.
$(BUILD)/pam_lookup.so: tests/pam/lookup.c++
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -O2 -Wall -Wextra -fPIC -shared -o $@ $<

# Fuzz targets (tests/fuzz/): replayed on their corpus by `make check`;
# fuzzed with clang's libFuzzer, each for FUZZ_SECONDS, by `make fuzz`.
FUZZ_TARGETS = engine mbox base64 proxy
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   = -std=c++20 -g -O1 -iquote . -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz_sources_engine = protocol/engine.c++ protocol/base64.c++ protocol/stuffing.c++ protocol/workarounds.c++ protocol/trace.c++
fuzz_sources_mbox   = mailbox/mbox/mbox.c++ mailbox/mbox/mbox_uids.c++ mailbox/mbox/line_scanner.c++ mailbox/message_memory.c++ mailbox/digest.c++ mailbox/uids.c++ sys/file.c++
fuzz_sources_base64 = protocol/base64.c++
fuzz_sources_proxy  = io/proxy.c++ sys/file.c++

$(BUILD)/fuzz-replay-%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/replay.o $(BUILD)/libpopd.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

build/fuzz/%: tests/fuzz/%.c++ $(LIB_SOURCES) $(wildcard */*.h */*/*.h) params.h
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
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -c -o $@ $<

-include $(DEPS)

# Debian packages the build and the tests need; installed when missing.
deps:
	@tests/install-deps

check: deps
	tools/check-layout
	$(MAKE) $(POPD) $(BUILD)/unit-tests $(BUILD)/libfaults.so $(BUILD)/pam_lookup.so \
	  $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay-%)
	$(BUILD)/unit-tests
	for t in $(FUZZ_TARGETS); do $(BUILD)/fuzz-replay-$$t tests/fuzz/corpus/$$t/* || exit 1; done
	tests/system/run-e2e.sh $(POPD) $(BUILD)/libfaults.so $(BUILD)/pam_lookup.so

# The unit tests alone, in seconds (doctest: UNIT='-tc=handover*' picks some).
unit:
	$(MAKE) $(BUILD)/unit-tests
	$(BUILD)/unit-tests $(UNIT)

# Side by side with Dovecot and popa3d (bench/run.py; as root): SIZE=small,
# medium (10,000 messages, ~200 MB) or large (100,000, ~1.1 GB); with
# FORMAT=maildir the same messages as a Maildir, against Dovecot. Not in CI.
SIZE ?= medium
RUNS ?= 5
FORMAT ?= mbox
bench: deps
	@tests/install-deps bench
	$(MAKE) popd
	/usr/bin/python3 bench/run.py --size $(SIZE) --runs $(RUNS) --format $(FORMAT)

demo: deps
	$(MAKE) popd
	@demo/run.sh ./popd

# Where `make install` puts things; the Debian package sets them too.
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR  ?= /etc
UNITS        = popd.socket pop3s.socket popd@.service pop3s@.service
XINETD       = popd pop3s
# Installed files that name the binary get its installed path.
at_sbindir   = sed 's|/usr/local/sbin/popd|$(SBINDIR)/popd|'

# The Debian package (debian/), built from a copy of the tree in build/deb.
VERSION = $(shell sed -n '1s/.*(\(.*\)).*/\1/p' debian/changelog)
deb:
	@tests/install-deps deb
	rm -rf build/deb && mkdir -p build/deb/popd-$(VERSION)
	tar --exclude=./build --exclude=./.git --exclude=./popd -cf - . | tar -xf - -C build/deb/popd-$(VERSION)
	cd build/deb/popd-$(VERSION) && dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning build/deb/popd_$(VERSION)_*.changes

# The PAM service and /etc/default/popd are installed only if there are
# none: they are the administrator's once they exist, and `make uninstall`
# leaves them.
install: popd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/xinetd.d $(DESTDIR)$(SYSCONFDIR)/pam.d $(DESTDIR)$(SYSCONFDIR)/default \
	  $(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d $(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d
	install -m 755 popd $(DESTDIR)$(SBINDIR)/popd
	install -m 644 man/popd.8 $(DESTDIR)$(MANDIR)/man8/popd.8
	for u in $(UNITS); do $(at_sbindir) systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -m 644 systemd/popd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/popd.conf
	for x in $(XINETD); do $(at_sbindir) xinetd.d/$$x >$(DESTDIR)$(SYSCONFDIR)/xinetd.d/$$x || exit 1; done
	install -m 644 fail2ban/filter.d/popd.conf $(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d/popd.conf
	install -m 644 fail2ban/jail.d/popd.conf $(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d/popd.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/pam.d/popd ] || install -m 644 pam.d/popd $(DESTDIR)$(SYSCONFDIR)/pam.d/popd
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/popd ] || install -m 644 default/popd $(DESTDIR)$(SYSCONFDIR)/default/popd

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/popd $(DESTDIR)$(MANDIR)/man8/popd.8 $(DESTDIR)$(TMPFILESDIR)/popd.conf \
	  $(UNITS:%=$(DESTDIR)$(UNITDIR)/%) $(XINETD:%=$(DESTDIR)$(SYSCONFDIR)/xinetd.d/%) \
	  $(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d/popd.conf $(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d/popd.conf

clean:
	rm -rf build popd

.PHONY: all deps check unit demo install uninstall clean fuzz bench deb
