package com.example.app;

import com.example.greeting.Greeter;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import org.apache.commons.lang3.StringUtils;

public final class Main {
    private Main() {}

    public static void main(String[] args) throws Exception {
        String who;
        try (InputStream in = Main.class.getResourceAsStream("/who.txt")) {
            who = new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
        }
        System.out.println(Greeter.greet(StringUtils.capitalize(who)));
        System.out.println(StringUtils.repeat('=', 12));
    }
}
