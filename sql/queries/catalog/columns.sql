-- Catalog pane: the catalogued columns of this database, in catalogue order within each table.
SELECT schema_name, table_name, column_name, data_type, is_nullable, data_classification, last_updated
FROM data_catalog
WHERE database_name = current_database()
ORDER BY schema_name, table_name, ordinal_position NULLS LAST, column_name
