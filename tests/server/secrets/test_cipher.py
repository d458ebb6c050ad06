from __future__ import annotations

from conveyor.server.secrets.cipher import SecretCipher, derive_fernet_key


class TestDeriveFernetKey:
    def test_is_stable_for_one_server_key_and_differs_between_keys(self) -> None:
        assert derive_fernet_key("k1") == derive_fernet_key("k1")
        assert derive_fernet_key("k1") != derive_fernet_key("k2")

    def test_is_not_the_server_key_itself(self) -> None:
        assert b"server-key" not in derive_fernet_key("server-key")


class TestSecretCipher:
    def test_round_trips_unicode_and_encrypts_each_time_anew(self) -> None:
        cipher = SecretCipher("server-key")
        first, second = cipher.encrypt("pässwörd ✓"), cipher.encrypt("pässwörd ✓")
        assert first != second
        assert cipher.decrypt(first, name="P", project="demo") == "pässwörd ✓"
