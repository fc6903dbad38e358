// Certificate files for the TLS and DTLS tests: a self-signed EC
// certificate (CN given) and its key, plus a second key that belongs to no
// certificate, in a fresh temporary directory removed afterwards.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace turn::cp::test {

// A self-signed EC certificate and its key as PEM files in a fresh directory.
struct CertFiles {
    std::string dir, cert, key, other_key;
    explicit CertFiles(const char* cn = "turn.test") {
        char tmpl[] = "/tmp/turn-tls-test-XXXXXX";
        dir = ::mkdtemp(tmpl);
        cert = dir + "/cert.pem";
        key = dir + "/key.pem";
        other_key = dir + "/other-key.pem";
        EVP_PKEY* k = EVP_EC_gen("P-256");
        EVP_PKEY* k2 = EVP_EC_gen("P-256");
        X509* x = X509_new();
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -60);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, k);
        X509_NAME* n = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
        X509_set_issuer_name(x, n);
        X509_sign(x, k, EVP_sha256());
        auto write = [](const std::string& path, auto fn) {
            FILE* f = std::fopen(path.c_str(), "w");
            fn(f);
            std::fclose(f);
        };
        write(cert, [&](FILE* f) { PEM_write_X509(f, x); });
        write(key, [&](FILE* f) { PEM_write_PrivateKey(f, k, nullptr, nullptr, 0, nullptr, nullptr); });
        write(other_key, [&](FILE* f) { PEM_write_PrivateKey(f, k2, nullptr, nullptr, 0, nullptr, nullptr); });
        X509_free(x);
        EVP_PKEY_free(k);
        EVP_PKEY_free(k2);
    }
    ~CertFiles() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

}  // namespace turn::cp::test
