-- A station's password, once accepted by the OCPP door, leaves a verifier: an HMAC (keyed with
-- a secret from the environment, never stored) of the station, its password hash and the
-- password. A restarted node checks a charger's password with it instead of a slow scrypt.
ALTER TABLE stations ADD COLUMN password_verifier text;
