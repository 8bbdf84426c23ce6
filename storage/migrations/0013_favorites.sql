-- A driver's favourite locations (seed 000 §7: the app's `user_favorites`, by location).
CREATE TABLE favorites (
    client_id   uuid NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    location_id text NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, location_id)
);
