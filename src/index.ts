/** switchyard public API. */
export {};
