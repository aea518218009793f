// Passwords against the fields Dovecot's doveadm pw, mkpasswd and openssl
// passwd wrote (all of the password "pa$$ word").
#include <doctest/doctest.h>

#include <cctype>
#include <string>
#include <string_view>

#include "auth/password.h"

using namespace popd::auth;

namespace {

constexpr std::string_view right = "pa$$ word";

struct Made {
  const char* by;
  const char* field;
};

// Strong schemes: accepted without --allow-weak-schemes.
constexpr Made strong[] = {
    {"doveadm pw -s SHA512-CRYPT",
     "{SHA512-CRYPT}$6$q34WEUsg.JpUt0UJ$pNRxGCVtqQt13wzzvhgWpNughUwP9TkgUev5Vu9Ca9ko1JQKNTU7sv2l1skMiL05kF5E9C7orEO4J87VQbtMV1"},
    {"doveadm pw -s SHA256-CRYPT", "{SHA256-CRYPT}$5$XDDJ1N6PWfjZqZDK$QwpDBaRuBqnoDWTMrdvjMTCqjws6DNVu2cYdW7TIYY3"},
    {"doveadm pw -s BLF-CRYPT", "{BLF-CRYPT}$2y$05$BqLydw6HYkySodArOCFlIudxlN4JNYEvvSZbIVgkHziK.Jz35tYsO"},
    {"doveadm pw -s CRYPT", "{CRYPT}$2y$05$0fkvGW7LWa7pDVHkB3TK8eM/5zvaWMkIgNiYpQD47F9GsrgYn3Dem"},
    {"doveadm pw -s ARGON2I",
     "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$SYNeLG1++KrmnKE+znbfmA$PJsotVf1trnPrkD44Az1vn7OeV293Dc37hrhWm/118A"},
    {"doveadm pw -s ARGON2ID",
     "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$WDJxJoCtUJVBPzXfn27gOA$+wrC3MHyBJe8tlQbQF5033IRH1WshniIMp1Wx2/hnTQ"},
    {"mkpasswd -m yescrypt", "$y$j9T$uQ7QI0Bmpl8wzRC7AFAo./$ySibrS9FAM8raqc8CEUUdXJvNw0MlhoBr3DeKPegMg3"},
    {"openssl passwd -6",
     "$6$tKFjBHds4bysYtPE$DJlr60V7GI3Lk/5ZlyuDQomAxo9FrTMT1uxevBGiBKCziTctW5JLXxqlUP9sxHXZfAmGeqErw0FsA/aY3MYLh."},
};

// Weak schemes: refused unless allowed.
constexpr Made weak[] = {
    {"doveadm pw -s PLAIN", "{PLAIN}pa$$ word"},
    {"doveadm pw -s SHA", "{SHA}JT/jTDtbGafal6JjN7plGhhkLG4="},
    {"doveadm pw -s SSHA", "{SSHA}QPrGVAKRRYQ/IoRrg04toZg59FFfoovO"},
    {"doveadm pw -s SHA256", "{SHA256}cBFXgcYfD5ZFfSMq6mgkqPbK9TzIE+/ZnNxfTKDEUZk="},
    {"doveadm pw -s SSHA256", "{SSHA256}rY+PZDylRNRdvND9pO3BeF4Rj+XzRZWE51jjf2jSkk2JXate"},
    {"doveadm pw -s SHA512",
     "{SHA512}vOIK+qfTm1wmW7YGNz0DgVDd84u/QzD2joS9re7/X0hPRtVt74kC/J3Aepl1kn92MIfgeP/YD5vnMa1cASCVPw=="},
    {"doveadm pw -s SSHA512",
     "{SSHA512}I4ATs5hASf7a5ZYCe9szE3OW0BsLBJgSUXA/EEa4y79DtPwWYAZ5PIU74+ejkHFD5kr1S87LqXBKtx6iYpay0/54iWI="},
    {"doveadm pw -s PLAIN-MD5", "{PLAIN-MD5}f12dc7fa9e234e95ca9d20e5047af5c7"},
    {"doveadm pw -s LDAP-MD5", "{LDAP-MD5}8S3H+p4jTpXKnSDlBHr1xw=="},
    {"doveadm pw -s SHA256.HEX", "{SHA256.HEX}70115781c61f0f96457d232aea6824a8f6caf53cc813efd99cdc5f4ca0c45199"},
    {"doveadm pw -s MD5-CRYPT", "{MD5-CRYPT}$1$TnTnHrZg$mnY2THp1W7brzcXgyrvz2/"},
    {"mkpasswd -m md5crypt", "$1$SU6FmFYl$B0.o7nCS7r3yGpt/HsRJt0"},
    {"mkpasswd -m descrypt", "zFzJjEzV7jqg6"},
};

}  // namespace

TEST_CASE("strong schemes: the right password matches, any other does not") {
  for (const Made& made : strong) {
    CAPTURE(std::string(made.by));
    CHECK(check_password(made.field, right, false) == Check::match);
    CHECK(check_password(made.field, "pa$$ wore", false) == Check::mismatch);
    CHECK(check_password(made.field, "", false) == Check::mismatch);
    CHECK(check_password(made.field, std::string(right) + std::string(1, '\0') + "x", false) == Check::mismatch);
  }
}

TEST_CASE("weak schemes: refused, or with --allow-weak-schemes checked") {
  for (const Made& made : weak) {
    CAPTURE(std::string(made.by));
    CHECK(check_password(made.field, right, false) == Check::weak);
    CHECK(check_password(made.field, right, true) == Check::match);
    CHECK(check_password(made.field, "Pa$$ word", true) == Check::mismatch);  // DES crypt reads 8 characters
  }
  CHECK(check_password("{plain}pa$$ word", right, true) == Check::match);  // scheme names in any case
}

TEST_CASE("what is not a hash popd knows is unsupported, never a match") {
  for (const char* field :
       {"{CRAM-MD5}042cc3734a7c7ac774df4f06d630ba51e51d4cc350963ab48e821b4cf6c960f1", "{NOSUCH}x", "", "{CRYPT}",
        "!", "*", "!$6$q34WEUsg.JpUt0UJ$pNRxG", "$6$", "{SHA}not base64!", "{SHA}JT/jTDtbGafal6JjN7plGhhkLG4",
        "{PLAIN-MD5}f12dc7fa9e234e95ca9d20e5047af5c", "{ARGON2ID}$argon2id$garbage",
        "{ARGON2ID}$argon2id$v=19$m=65536,p=1$WDJxJoCtUJVBPzXfn27gOA$x"}) {
    CAPTURE(std::string(field));
    CHECK(check_password(field, right, true) == Check::unsupported);
    CHECK(check_password(field, "", true) != Check::match);
  }
}

TEST_CASE("a hash whose cost exceeds params.h's bounds is refused before it is computed") {
  // Each of these would hold the monitor for seconds to hours.
  for (const char* field : {
           "$2b$17$abcdefghijklmnopqrstuu5mJ/WuvUNQQy9zj6Gjz7XkX6spYaZGy",      // bcrypt cost 17
           "$6$rounds=10000001$salt$x", "$5$rounds=99999999999999999999$salt$x",  // SHA crypt rounds
           "$y$jGT$Ks9ZuxA3LRpLU1h.rF2cQ.$x",                                      // yescrypt over 2 GiB
           "$y$j9T/r1$Ks9ZuxA3LRpLU1h.rF2cQ.$x",                                   // 16 MiB, t = 500
           "$y$j9T.E$Ks9ZuxA3LRpLU1h.rF2cQ.$x",                                    // 18 lanes
           "$7$J6..../....Ks9ZuxA3LRpLU1h.rF2cQ.$x",                               // scrypt, 2 GiB
           "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$WDJxJoCtUJVBPzXfn27gOA$x",   // 4 GiB
           "{ARGON2ID}$argon2id$v=19$m=65536,t=100,p=1$WDJxJoCtUJVBPzXfn27gOA$x",   // 6 GiB worked
           "{ARGON2I}$argon2i$v=19$m=65536,t=3,p=17$WDJxJoCtUJVBPzXfn27gOA$x",     // 17 lanes
           // Found by an attacker's review, each minutes to hours of the monitor's time:
           "{ARGON2ID}$argon2id$v=19$m=16,t=262144,p=2$c29tZXNhbHRzYWx0$x",         // threads, 4 a pass
           "$sha1$4294967295$abcdefgh$x", "$md5,rounds=4294963199$abcdefgh$x",      // unbounded rounds
           "$y$/FT.0$Ks9ZuxA3LRpLU1h.rF2cQ.$x",                                    // WORM: 1 GiB, 4 times
           "$7$GU....2....Ks9ZuxA3LRpLU1h.rF2cQ.$x",                               // scrypt: 1 GiB, 4 times
           "{ARGON2ID}$argon2id$v=19$m=1048576,t=4,p=1$c29tZXNhbHRzYWx0$x"}) {      // 1 GiB, 4 passes
    CAPTURE(std::string(field));
    CHECK(check_password(field, right, true) == Check::too_costly);
  }
}

TEST_CASE("costs within the bounds are computed, with every parameter yescrypt encodes") {
  // Made by Python's crypt.crypt (libxcrypt) with "pw": t = 10 over 4 MiB,
  // p = 7, and the WORM flavor with p = 4.
  for (const char* field : {"$y$j7T/7$Ks9ZuxA3LRpLU1h.rF2cQ.$IR1keJctzT67nQZWfogKe50YqR.LLeyviX5gK7Zu1y5",
                            "$y$j7T.3$Ks9ZuxA3LRpLU1h.rF2cQ.$RjH9/JvH.loNQRFo2SMTxDONPoIpP2RbFAH0p1aRJA9",
                            "$y$/7T.0$Ks9ZuxA3LRpLU1h.rF2cQ.$D1.k4xQ/KDBATB6MYda6snmhJ5DLBwIaAF3tZg2ddJ7"}) {
    CAPTURE(std::string(field));
    CHECK(check_password(field, "pw", false) == Check::match);
    CHECK(check_password(field, "pw2", false) == Check::mismatch);
  }
}

TEST_CASE("scheme names") {
  CHECK(scheme_of("{SHA512-CRYPT}$6$x") == "SHA512-CRYPT");
  CHECK(scheme_of("{sha256.hex}ab") == "SHA256");
  CHECK(scheme_of("$y$j9T$x$y") == "CRYPT");
}

TEST_CASE("popd --hash-password makes fields that check, with a fresh salt each time") {
  for (const char* scheme : {"CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID", "argon2id"}) {
    CAPTURE(scheme);
    auto field = hash_password(right, scheme);
    REQUIRE(field);
    std::string upper = scheme;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CHECK(scheme_of(*field) == upper);
    CHECK(check_password(*field, right, false) == Check::match);
    CHECK(check_password(*field, "wrong", false) == Check::mismatch);
    CHECK(hash_password(right, scheme) != field);
  }
  CHECK(hash_password(right, "CRYPT")->starts_with("{CRYPT}$y$"));  // Debian 12's preferred method
  CHECK(!hash_password(right, "PLAIN"));
  CHECK(!hash_password(right, "SHA"));
}
